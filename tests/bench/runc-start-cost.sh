#!/usr/bin/env bash
# runc-start-cost.sh [N]   (default N=10; root; release build)
#
# What hpcc-hook adds to a real `runc run`, baseline in the same invocation:
# the same bundle without the hook. Two images: a busybox image with a CPU
# annotation (decision only) and the MPICH image with mpi_replace (decision,
# 8 bind mounts, the host ldconfig). Runs are interleaved so drift hits both.
set -euo pipefail
N=${1:-10}
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "must run as root" >&2; exit 1; }
cargo build --release -q -p hpcc-hook
bash tests/setup/build-fixtures.sh tests/work >/dev/null
work=$(mktemp -d /tmp/hpcc-runc-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/hook.toml" <<TOML
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
[cache]
dir = "$work/cache"
TOML
mk() { # name rootfs args-json with-hook annotations...
  local name=$1 rootfs=$2 args=$3 hook=$4; shift 4
  if [ "$hook" = 1 ]; then
    HOOK=$PWD/target/release/hpcc-hook HPCC_CONFIG=$work/hook.toml ARGS=$args \
      bash tests/setup/make-bundle.sh "$rootfs" "$work/$name" "$@" >/dev/null
  else
    ARGS=$args bash tests/setup/make-bundle.sh "$rootfs" "$work/$name" "$@" >/dev/null
  fi
}
CPU=org.supercontainers.hardware.cpu.optimized.version=x86_64
MPI=(org.supercontainers.mpi.implementation=mpich org.supercontainers.mpi.portability.mode=mpi_replace)
mk busybox-base tests/work/rootfs/busybox '["/bin/true"]' 0 $CPU
mk busybox-hook tests/work/rootfs/busybox '["/bin/true"]' 1 $CPU
mk mpich-base tests/work/rootfs/mpich-app '["/usr/bin/mpi-version"]' 0 $CPU "${MPI[@]}"
mk mpich-hook tests/work/rootfs/mpich-app '["/usr/bin/mpi-version"]' 1 $CPU "${MPI[@]}"
# The replacement must really have happened, or the figures mean nothing.
runc --root "$work/runc" run --bundle "$work/mpich-hook" check | grep -q 'MPICH Version' \
  || { echo "mpi_replace did not happen" >&2; exit 1; }
runc --root "$work/runc" delete -f check 2>/dev/null || true

declare -A T
for i in $(seq "$N"); do
  for b in busybox-base busybox-hook mpich-base mpich-hook; do
    s=$(date +%s%N)
    runc --root "$work/runc" run --bundle "$work/$b" "b$i$b" >/dev/null
    e=$(date +%s%N)
    runc --root "$work/runc" delete -f "b$i$b" 2>/dev/null || true
    T[$b]+="$(( (e - s) / 1000 )) "
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]/1000}'; }
printf '\nrunc run with and without hpcc-hook, %s runs each (median ms)\n' "$N"
printf '%-34s %10s %10s %8s\n' image "no hook" "hpcc-hook" ratio
for img in busybox mpich; do
  b=$(echo "${T[$img-base]}" | median); h=$(echo "${T[$img-hook]}" | median)
  label=$([ $img = busybox ] && echo "busybox, CPU check only" || echo "mpich-app, mpi_replace (8 mounts)")
  awk -v l="$label" -v b="$b" -v h="$h" 'BEGIN {printf "%-34s %10.1f %10.1f %8.2f\n", l, b, h, h / b}'
done
