#!/usr/bin/env bash
# slurm-step-cost.sh [N]   (default N=20; root; Slurm up: tests/setup/slurm.sh start)
#
# Per-step cost of hpcc on a Slurm node: times N `srun --container` steps of
# a tiny busybox bundle under three configurations, interleaved round-robin
# so that drift hits all alike, plus N steps without a container:
#   none      no plugin, oci.conf runs runc directly
#   plugin    hpcc_spank.so in plugstack.conf, runc directly
#   full      plugin + hpcc-runc-wrapper + hpcc-hook (what docs/slurm.md sets up)
#   nocont    `srun /bin/true` (no --container) without / with the plugin
# and reads the plugin's own decision time ("decided in X ms") from slurmd's
# log, cold (fingerprint cache removed) and warm.
# Uses target/release (cargo build --release -p hpcc-spank -p hpcc-hook).
# /etc/slurm/plugstack.conf and oci.conf are restored on exit.
set -euo pipefail
N=${1:-20}
repo=$(cd "$(dirname "$0")/../.." && pwd)
rel=${HPCC_TARGET:-$repo/target/release}
SO=$rel/libhpcc_spank.so WRAP=$rel/hpcc-runc-wrapper HOOK=$rel/hpcc-hook
for f in "$SO" "$WRAP" "$HOOK"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "missing $f: cargo build --release -p hpcc-spank -p hpcc-hook" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "must run as root" >&2; exit 1; }
srun -N1 -t 1 true >/dev/null 2>&1 || { echo "Slurm is not up: tests/setup/slurm.sh start" >&2; exit 1; }
LOG=/tmp/slurm/log/slurmd.log

work=$(mktemp -d /tmp/hpcc-bench.XXXXXX)
cp -p /etc/slurm/plugstack.conf "$work/plugstack.conf.orig" 2>/dev/null || : >"$work/plugstack.conf.orig"
cp -p /etc/slurm/oci.conf "$work/oci.conf.orig" 2>/dev/null || : >"$work/oci.conf.orig"
restore() {
  cp -p "$work/plugstack.conf.orig" /etc/slurm/plugstack.conf
  cp -p "$work/oci.conf.orig" /etc/slurm/oci.conf
  rm -rf "$work"
}
trap restore EXIT

# Bundle: the busybox fixture rootfs and a runc spec config.
rootfs=$repo/tests/work/rootfs/busybox
[ -d "$rootfs" ] || { echo "no $rootfs: tests/setup/build-fixtures.sh" >&2; exit 1; }
mkdir -p "$work/b" && cp -a "$rootfs" "$work/b/rootfs"
(cd "$work/b" && runc spec)
jq '.process.terminal=false | del(.process.rlimits) | .root.readonly=false
    | .annotations={"org.supercontainers.hardware.cpu.optimized.version":"x86_64"}' \
  "$work/b/config.json" >"$work/b/c.json" && mv "$work/b/c.json" "$work/b/config.json"
printf '[log]\njournald = false\n' >"$work/hook.toml"

oci() {  # RUNTIME-PREFIX
  cat >/etc/slurm/oci.conf <<EOC
RunTimeQuery="runc --root=/run/slurm-oci state %n.%u.%j.%s.%t"
RunTimeKill="runc --root=/run/slurm-oci kill -a %n.%u.%j.%s.%t"
RunTimeDelete="runc --root=/run/slurm-oci delete --force %n.%u.%j.%s.%t"
RunTimeRun="$1 --root=/run/slurm-oci run %n.%u.%j.%s.%t -b %b"
EOC
}
setup() {
  case $1 in
    none|nocont0) : >/etc/slurm/plugstack.conf; oci runc ;;
    plugin|nocont1) echo "required $SO config=$work/hook.toml" >/etc/slurm/plugstack.conf; oci runc ;;
    full) echo "required $SO config=$work/hook.toml" >/etc/slurm/plugstack.conf
          oci "$WRAP --hpcc-hook=$HOOK --hpcc-config=$work/hook.toml" ;;
  esac
}
step() {  # CONFIG -> elapsed ms on stdout
  local t0 t1
  t0=$(date +%s%N)
  case $1 in
    nocont*) srun -N1 /bin/true >/dev/null ;;
    *) srun -N1 --container="$work/b" /bin/true >/dev/null ;;
  esac
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000 ))
}

configs=(none plugin full nocont0 nocont1)
for c in "${configs[@]}"; do : >"$work/$c.us"; done

# Cold fingerprint: drop the per-boot cache once, one step with the plugin.
rm -f /run/hpcc/fingerprint.json
mark=$(wc -l <"$LOG")
setup plugin; step plugin >/dev/null
cold=$(tail -n +"$((mark + 1))" "$LOG" | grep -o 'decided in [0-9.]* ms' | head -1 | awk '{print $3}')

mark=$(wc -l <"$LOG")
for i in $(seq 1 "$N"); do
  for c in "${configs[@]}"; do setup "$c"; step "$c" >>"$work/$c.us"; done
done
decided=$(tail -n +"$((mark + 1))" "$LOG" | grep -o 'decided in [0-9.]* ms' | awk '{print $3}' | sort -n)

stats() {  # FILE -> "median mean" in ms
  sort -n "$1" | awk '{a[NR]=$1; s+=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f %.1f\n", m/1000, s/NR/1000}'
}
read -r base_med _ < <(stats "$work/none.us")
read -r nc0_med _ < <(stats "$work/nocont0.us")
echo
echo "hpcc per-step cost, $N steps per configuration, $(nproc) cores, $(srun --version)"
printf '%-34s %10s %10s %8s\n' configuration "median ms" "mean ms" ratio
for c in "${configs[@]}"; do
  read -r med mean < <(stats "$work/$c.us")
  case $c in
    none) name="--container, no hpcc" ref=$base_med ;;
    plugin) name="--container, plugin" ref=$base_med ;;
    full) name="--container, plugin+wrapper+hook" ref=$base_med ;;
    nocont0) name="no container, no hpcc" ref=$nc0_med ;;
    nocont1) name="no container, plugin loaded" ref=$nc0_med ;;
  esac
  printf '%-34s %10s %10s %8s\n' "$name" "$med" "$mean" "$(awk -v a="$med" -v b="$ref" 'BEGIN{printf "%.3f", a/b}')"
done
if [ -n "$decided" ]; then
  med=$(echo "$decided" | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
  max=$(echo "$decided" | tail -1)
  echo
  echo "plugin decision inside slurmstepd (from slurmd.log): cold cache ${cold:-?} ms; warm median $med ms, max $max ms over $(echo "$decided" | wc -l) steps"
fi
