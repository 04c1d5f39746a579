#!/usr/bin/env bash
# mpi-pingpong.sh [N]   (default N=5; root; ~1 min for N=5 on 2 cores)
#
# MPI ping-pong between the two nodes of the rig (tests/setup/slurm2.sh), bare
# metal against the same program in an `srun --container` step that hpcc wires
# (hpcc_spank.so `required` + `hpcc-runtime --hpcc-slurm`, host MPI by
# mpi_replace), in ONE invocation, runs interleaved so that drift hits all sides:
#   mpich  srun -N2 --ntasks-per-node=1 --mpi=pmi2  pingpong-mpich | --container=B /usr/bin/pingpong
#   ompi   srun -N2 --ntasks-per-node=1 --mpi=pmix  pingpong-ompi  | --container=B /usr/bin/pingpong
# The image is green (CPU target = the node's own, from `hpcc fingerprint`, MPI
# annotations, mpi_replace); the score is read back from slurmd's log. tests/setup/src/pingpong.c gives, per
# size (8 B, 1 MiB, 4 MiB), the one-way latency (half round trip) and the
# bandwidth. Printed: min / median / max of N runs per side, and the median
# as "% of bare metal" (latency: bare/container, bandwidth: container/bare).
# Starts the rig (takes /tmp/hpcc-e2e.lock) and stops it at the end unless KEEP=1.
# HPCC_TARGET=DIR: where libhpcc_spank.so and hpcc-runtime are (default
# target/debug, built if absent; neither is on the data path of a running job).
# OUT=DIR keeps the raw outputs (default: a temporary directory, removed).
set -euo pipefail
export LC_ALL=C
N=${1:-5}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
[ "$(id -u)" -eq 0 ] || { echo "must run as root" >&2; exit 1; }
T=${HPCC_TARGET:-$repo/target/debug}
if [ ! -f "$T/libhpcc_spank.so" ] || [ ! -x "$T/hpcc-runtime" ] || [ ! -x "$T/hpcc" ]; then
  [ -z "${HPCC_TARGET:-}" ] || { echo "missing $T/libhpcc_spank.so or hpcc-runtime" >&2; exit 1; }
  nice -n 10 cargo build -q -p hpcc-spank -p hpcc-runtime -p hpcc-cli
fi
[ -x "$T/hpcc" ] || { echo "missing $T/hpcc (cargo build -p hpcc-cli)" >&2; exit 1; }
bash tests/setup/build-mpi-fixtures.sh tests/work >/dev/null
work=$(mktemp -d /tmp/hpcc-mpi-pingpong.XXXXXX)
OUT=${OUT:-$work/out}; mkdir -p "$OUT"
L=/usr/lib/x86_64-linux-gnu
cat >"$work/hook.toml" <<TOML
[mpi.mpich]
abi = "mpich"
libraries = ["$L/libmpich.so.12"]
[mpi.openmpi]
abi = "openmpi"
libraries = ["$L/libmpi.so.40"]
dependencies = ["$L/libpmix.so.2", "$L/libmunge.so.2", "$L/libnl-3.so.200", "$L/libmca_common_sm.so.40",
                "$L/libmca_common_ompio.so.41", "$L/libmca_common_monitoring.so.50",
                "$L/libpsm2.so.2", "$L/libpsm_infinipath.so.1"]
mounts = ["$L/openmpi/lib", "$L/pmix2/lib/pmix", "/usr/share/openmpi", "/etc/openmpi"]
[log]
journald = false
TOML
echo "required $T/libhpcc_spank.so config=$work/hook.toml default_mpi=auto" >"$work/plugstack.conf"
# A green image is built for this node's own CPU target (a generic older one is orange).
cpu=$(HPCC_CONFIG=$work/hook.toml "$T/hpcc" fingerprint | sed -n 's/^cpu: *\([^ ]*\) .*/\1/p')
[ -n "$cpu" ] || { echo "hpcc fingerprint gave no CPU target" >&2; exit 1; }
mk() {  # NAME IMAGE IMPL [KEY=VALUE...]
  local name=$1 img=$2 impl=$3; shift 3
  ARGS='["/usr/bin/pingpong"]' bash tests/setup/make-bundle.sh "tests/work/rootfs/$img-ring" "$work/$name" \
    org.supercontainers.hardware.cpu.optimized.version="$cpu" \
    org.supercontainers.mpi.implementation="$impl" \
    org.supercontainers.mpi.portability.mode=mpi_replace "$@" >/dev/null
}
mk mpich mpich mpich
mk ompi ompi openmpi
export SLURM_CONF=/tmp/hpcc-slurm2/etc/slurm.conf
SLURM2_OCI_RUNTIME="$T/hpcc-runtime --hpcc-slurm --hpcc-config=$work/hook.toml --hpcc-node=%n" \
  SLURM2_PLUGSTACK=$work/plugstack.conf SLURM2_OCI_KILL_SIGNAL=KILL \
  bash tests/setup/slurm2.sh start >&2
cleanup() {
  [ "${KEEP:-}" = 1 ] || bash tests/setup/slurm2.sh stop >/dev/null 2>&1 || true
  [ "$OUT" != "$work/out" ] || rm -rf "$work"
}
trap cleanup EXIT

run() {  # NAME SRUN-ARGS...: appends the "pingpong ..." lines of one run to $OUT/NAME.txt
  local name=$1; shift
  if ! (cd /tmp && timeout 120 srun -N2 --ntasks-per-node=1 "$@") >"$OUT/$name.last" 2>&1 ||
     ! grep -q 'bytes=4194304' "$OUT/$name.last"; then
    echo "run $name failed:" >&2; cat "$OUT/$name.last" >&2; exit 1
  fi
  grep '^pingpong ' "$OUT/$name.last" >>"$OUT/$name.txt"
}
for i in $(seq "$N"); do
  echo "round $i/$N" >&2
  run bare-mpich --mpi=pmi2 "$repo"/tests/work/mpi/bin/pingpong-mpich
  run ctr-mpich --mpi=pmi2 --container="$work/mpich" /usr/bin/pingpong
  run bare-ompi --mpi=pmix "$repo"/tests/work/mpi/bin/pingpong-ompi
  run ctr-ompi --mpi=pmix --container="$work/ompi" /usr/bin/pingpong
done
scores() { grep -ho "container $work/$1 may start on n[12] (score [a-z]*" /tmp/hpcc-slurm2/log/slurmd-n*.log |
             sed 's/.*score //' | sort -u | tr '\n' ' '; }

stats() {  # FILE BYTES FIELD -> "min median max"
  sed -n "s/.*bytes=$2 .*$3=\([0-9.]*\).*/\1/p" "$1" | sort -g |
    awk '{v[NR]=$1} END {m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%g %g %g", v[1], m, v[NR]}'
}
echo
echo "MPI ping-pong n1 <-> n2 (two-node rig, one host), $N runs per side: min / median / max"
echo "% of bare metal: median vs median, and best vs best (latency: lowest, bandwidth: highest; the"
echo "least disturbed run on a shared machine); latency: bare/container, bandwidth: container/bare"
echo "hpcc $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+changes'); image scores: mpich $(scores mpich)ompi $(scores ompi)"
printf '%-6s %-6s %-8s %-24s %-24s %s\n' MPI size metric "bare metal" "container (hpcc)" "% med/best"
for mpi in mpich ompi; do
  for b in 8 1048576 4194304; do
    case $b in 8) sz="8 B"; f=lat_us; unit="lat us" ;; 1048576) sz="1 MiB"; f=bw_MBps; unit="bw MB/s" ;;
               *) sz="4 MiB"; f=bw_MBps; unit="bw MB/s" ;; esac
    read -r a1 a2 a3 <<<"$(stats "$OUT/bare-$mpi.txt" $b $f)"
    read -r c1 c2 c3 <<<"$(stats "$OUT/ctr-$mpi.txt" $b $f)"
    pct() { if [ $f = lat_us ]; then awk -v a="$1" -v c="$2" 'BEGIN{printf "%.0f%%", 100*a/c}'
            else awk -v a="$1" -v c="$2" 'BEGIN{printf "%.0f%%", 100*c/a}'; fi; }
    both() {  # bare(min med max) ctr(min med max)
      if [ $f = lat_us ]; then echo "$(pct "$2" "$5")/$(pct "$1" "$4")"; else echo "$(pct "$2" "$5")/$(pct "$3" "$6")"; fi; }
    printf '%-6s %-6s %-8s %-24s %-24s %s\n' $mpi "$sz" "$unit" "$a1 / $a2 / $a3" "$c1 / $c2 / $c3" \
      "$(both "$a1" "$a2" "$a3" "$c1" "$c2" "$c3")"
  done
done
