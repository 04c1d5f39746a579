#!/usr/bin/env bash
# run-all.sh [N]   (root; default N=10 rounds; see BENCHMARKS.md)
#
# One command for every start-cost figure of BENCHMARKS.md: builds the
# release binaries, the fixtures and the bundles, measures, and prints the
# table (machine, date, min/median/max of each figure, the ratio to its
# target, PASS or MISSED). The table also goes to $OUT (default
# tests/work/bench/results.md).
#
#   a  runc run through hpcc-runtime, mpi_replace   vs plain runc run
#   b  runc run through hpcc-runtime, check only    vs plain runc run
#   c  runc run with hpcc-hook, mpi_replace         vs a /bin/true hook
#   d  runc run with hpcc-hook, check only          vs a /bin/true hook
#   S  runc run with Sarus's MPI hook (only with SARUS_MPI_HOOK=/path/mpi_hook)
#   e  planning the MPICH image (launch::decide in a fresh process)
#   f  srun --container step, plugin + hpcc-runtime vs no hpcc (one-node Slurm)
#   g  128 containers of one read-only bundle started at once through
#      hpcc-runtime and hpcc-hook, cold and warm per-boot cache (p50/p95/p99)
#
# Same program, same library on both sides: the mpi_replace baselines run
# /usr/bin/mpi-version in a copy of the mpich-app image into which the host
# MPICH and every library hpcc would mount (taken from hpcc's own plan) were
# copied, its linker cache rebuilt; the hpcc side runs the same program in
# the image with the stand-in MPICH, replaced at start. Every MPI run is
# checked to print the host's "MPICH Version". The check-only rows run
# /bin/true in the busybox image with a CPU annotation.
#
# Runs are interleaved: each round runs every variant once, in a fresh
# random order, so drift and neighbours' load hit all alike; a ratio is
# computed per round (hpcc / its baseline of the same round) and its
# min/median/max reported. Targets are judged on the median.
#
# Knobs (environment): N (rounds, or $1), SLURM_N (default 4*N), PLAN_N
# (default 3*N), BURST (default 128), SECTIONS (default "runc plan slurm
# burst"), SLURM_SPLIT (rows fp, fr, f2p, f2r: the plugin alone and the
# runtime alone, for what each costs), OLD_SPANK (an earlier build's
# libhpcc_spank.so: rows f0 and f20, the same steps with it), SARUS_MPI_HOOK (path to a built Sarus mpi_hook), OLD_RUNTIME and
# OLD_HOOK (an earlier build's hpcc-runtime and static hpcc-hook, with its
# hpcc beside it: rows a0 and c0, the same starts with them, interleaved
# with the rest, for a before/after in one run), LOCK (default
# /tmp/hpcc-e2e.lock, taken around each section that starts containers),
# OUT. Slurm is started with tests/setup/slurm.sh when it is not up (and
# stopped again); /etc/slurm/plugstack.conf and oci.conf are restored.
set -euo pipefail
export LC_ALL=C
N=${1:-${N:-10}}
# A step is ~0.1 s and its per-round ratios spread 0.7-1.5 on 2 cores:
# 4N rounds (60 at N=15, a minute) put the median's run-to-run spread
# near 0.01 instead of 0.03.
SLURM_N=${SLURM_N:-$((4 * N))}
PLAN_N=${PLAN_N:-$((3 * N))}
BURST=${BURST:-128}
SECTIONS=${SECTIONS:-runc plan slurm burst}
LOCK=${LOCK:-/tmp/hpcc-e2e.lock}
repo=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$repo/tests/work/bench/results.md}
cd "$repo"
[ "$(id -u)" -eq 0 ] || { echo "run-all.sh: must run as root" >&2; exit 1; }
for c in runc jq cargo; do command -v $c >/dev/null || { echo "run-all.sh: $c missing" >&2; exit 1; }; done
has() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
log() { printf '[bench] %s\n' "$*" >&2; }

log "building release binaries"
nice -n 10 cargo build --release -q -p hpcc-cli -p hpcc-spank
# The hook and the runtime that ship: statically linked, as packages build them.
WITH_RUNTIME=1 nice -n 10 bash packaging/build-static-hook.sh "$repo/target/static" >/dev/null
install -m 0755 "$repo/target/release/hpcc" "$repo/target/static/hpcc"   # their GPU helper
REL=$repo/target/release HOOK=$repo/target/static/hpcc-hook RUNTIME=$repo/target/static/hpcc-runtime
RUNC=$(command -v runc)
log "fixtures"
nice -n 10 bash tests/setup/build-fixtures.sh tests/work >/dev/null

W=$(mktemp -d /tmp/hpcc-bench.XXXXXX)
mkdir -p "$W/t" "$(dirname "$OUT")"
RROOT=$W/runc
RO_MOUNTS=()   # read-only binds of the burst (g), unmounted first
cleanup() {
  local m
  for m in "${RO_MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for c in $(runc --root "$RROOT" list -q 2>/dev/null); do runc --root "$RROOT" delete -f "$c" >/dev/null 2>&1 || true; done
  # A hook that mounted in the host's namespace would leave mounts here.
  for m in $(awk -v w="$W/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    log "leftover mount on the host: $m (unmounted)"; umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  [ -n "${SLURM_RESTORE:-}" ] && eval "$SLURM_RESTORE"
  # --one-file-system: a bind mount of a fixture that failed to come off
  # stays as it is
  rm -rf --one-file-system "$W"
}
trap cleanup EXIT

POLICY=$W/hook.toml
cat >"$POLICY" <<TOML
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
[cache]
dir = "$W/cache"
[log]
journald = false
TOML
CPU=org.supercontainers.hardware.cpu.optimized.version=x86_64
MPI=(org.supercontainers.mpi.implementation=mpich org.supercontainers.mpi.portability.mode=mpi_replace)
MPIARGS='["/usr/bin/mpi-version"]' TRUEARGS='["/bin/true"]'
mk() { # NAME ROOTFS ARGS HOOK(none|true|hpcc|sarus) ANNOTATIONS...
  local name=$1 rootfs=$2 args=$3 hook=$4; shift 4
  case $hook in
    none) ARGS=$args bash tests/setup/make-bundle.sh "$rootfs" "$W/$name" "$@" ;;
    true) ARGS=$args HOOK=/bin/true bash tests/setup/make-bundle.sh "$rootfs" "$W/$name" "$@" ;;
    hpcc) ARGS=$args HOOK=$HOOK HPCC_CONFIG=$POLICY bash tests/setup/make-bundle.sh "$rootfs" "$W/$name" "$@" ;;
    hpcc-old) ARGS=$args HOOK=$OLD_HOOK HPCC_CONFIG=$POLICY bash tests/setup/make-bundle.sh "$rootfs" "$W/$name" "$@" ;;
    # Sarus's hooks are createContainer hooks (its README): they mount in
    # the namespace they run in, which at prestart is the host's. Their
    # configuration is the hook's environment; the libraries are those
    # hpcc's plan mounts.
    sarus) ARGS=$args HOOK_STAGE=createContainer HOOK=$SARUS_MPI_HOOK bash tests/setup/make-bundle.sh "$rootfs" "$W/$name" "$@"
           # Files only: Sarus's hook mounts libraries, not the UCX module
           # directory hpcc also mounts (so Sarus does slightly less here).
           local deps; deps=$(jq -r '.tweaks.mounts[1:][].source' "$W/plan.json" |
             while read -r p; do [ -f "$p" ] && printf '%s\n' "$p"; done | paste -sd: -)
           jq --arg deps "$deps" --arg ldc "$(command -v ldconfig || echo /sbin/ldconfig)" '.hooks.createContainer[0].env += [
               "MPI_LIBS=/usr/lib/x86_64-linux-gnu/libmpich.so.12", "MPI_DEPENDENCY_LIBS=" + $deps,
               "LDCONFIG_PATH=" + $ldc, "MPI_COMPATIBILITY_TYPE=major"]' \
             "$W/$name/config.json" >"$W/c.json" && mv "$W/c.json" "$W/$name/config.json" ;;
  esac >/dev/null
  cp "$W/$name/config.json" "$W/$name/config.json.orig"
}

# --- the baseline image: the host MPICH and its closure copied in ---------
mk rt-mpi tests/work/rootfs/mpich-app "$MPIARGS" none $CPU "${MPI[@]}"
HPCC_CONFIG=$POLICY "$REL/hpcc" match --plan --json --bundle "$W/rt-mpi" >"$W/plan.json" || true  # exit = score
jq -e '.tweaks.mounts | length > 1' "$W/plan.json" >/dev/null || { log "hpcc plans no replacement"; exit 1; }
cp -a tests/work/rootfs/mpich-app "$W/mpich-host"
libdir=$W/mpich-host/usr/lib/x86_64-linux-gnu
jq -r '.tweaks.mounts[] | "\(.source) \(.destination)"' "$W/plan.json" | while read -r src dst; do
  # the file hpcc mounts, under the name it gets; a directory (UCX's
  # transport modules) next to the libraries, where libucs looks for it
  if [ -d "$src" ]; then cp -rL "$src" "$libdir/$(basename "$dst")"; else cp -L "$src" "$libdir/$(basename "$dst")"; fi
done
/sbin/ldconfig -r "$W/mpich-host"
IMAGES_NOTE="baseline image = mpich-app + $(jq '.tweaks.mounts | length' "$W/plan.json") host libraries copied in (libmpich + its closure)"

# --- bundles ---------------------------------------------------------------
mk base-mpi "$W/mpich-host" "$MPIARGS" none $CPU "${MPI[@]}"
mk base-chk tests/work/rootfs/busybox "$TRUEARGS" none $CPU
mk rt-chk tests/work/rootfs/busybox "$TRUEARGS" none $CPU
mk true-mpi "$W/mpich-host" "$MPIARGS" true $CPU "${MPI[@]}"
mk hook-mpi tests/work/rootfs/mpich-app "$MPIARGS" hpcc $CPU "${MPI[@]}"
mk true-chk tests/work/rootfs/busybox "$TRUEARGS" true $CPU
mk hook-chk tests/work/rootfs/busybox "$TRUEARGS" hpcc $CPU
VARIANTS=(base-mpi rt-mpi base-chk rt-chk true-mpi hook-mpi true-chk hook-chk)
if [ -n "${SARUS_MPI_HOOK:-}" ]; then
  [ -x "$SARUS_MPI_HOOK" ] || { log "SARUS_MPI_HOOK=$SARUS_MPI_HOOK is not executable"; exit 1; }
  mk sarus-mpi tests/work/rootfs/mpich-app "$MPIARGS" sarus $CPU "${MPI[@]}"
  VARIANTS+=(sarus-mpi)
fi
if [ -n "${OLD_RUNTIME:-}" ] && [ -n "${OLD_HOOK:-}" ]; then
  [ -x "$OLD_RUNTIME" ] && [ -x "$OLD_HOOK" ] || { log "OLD_RUNTIME or OLD_HOOK is not executable"; exit 1; }
  mk rt-mpi-old tests/work/rootfs/mpich-app "$MPIARGS" none $CPU "${MPI[@]}"
  mk hook-mpi-old tests/work/rootfs/mpich-app "$MPIARGS" hpcc-old $CPU "${MPI[@]}"
  VARIANTS+=(rt-mpi-old hook-mpi-old)
fi

# One start: the variant's command, timed with bash's clock (no fork in the
# timed region but the runtime's own), and the CPU time of every process of
# the start (runtime, hooks and their helpers, the container: all reaped
# below this shell; `times` is a builtin, read before and after).
children_cpu() { # FILE written by `times` -> ms of children user + sys
  awk 'NR == 2 {n = split($0, f, " "); t = 0
    for (i = 1; i <= n; i++) {split(f[i], p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2]}
    printf "%.3f\n", t * 1000}' "$1"
}
start() { # VARIANT ID -> appends ms to $W/t/VARIANT and $W/t/VARIANT.cpu
  local v=$1 id=$2 s e out=$W/out
  cp "$W/$v/config.json.orig" "$W/$v/config.json"
  times >"$W/cpu0"
  case $v in
    rt-*-old) s=$EPOCHREALTIME
          "$OLD_RUNTIME" --hpcc-config="$POLICY" --hpcc-runtime="$RUNC" --root "$RROOT" run --bundle "$W/$v" "$id" >"$out" 2>"$W/err" || { cat "$W/err" >&2; return 1; }
          e=$EPOCHREALTIME ;;
    rt-*) s=$EPOCHREALTIME
          "$RUNTIME" --hpcc-config="$POLICY" --hpcc-runtime="$RUNC" --root "$RROOT" run --bundle "$W/$v" "$id" >"$out" 2>"$W/err" || { cat "$W/err" >&2; return 1; }
          e=$EPOCHREALTIME ;;
    *)    s=$EPOCHREALTIME
          "$RUNC" --root "$RROOT" run --bundle "$W/$v" "$id" >"$out" 2>"$W/err" || { cat "$W/err" >&2; return 1; }
          e=$EPOCHREALTIME ;;
  esac
  times >"$W/cpu1"
  # Deleted the way an engine deletes it: through the runtime it started it
  # with (hpcc-runtime's delete also removes the container's private bundle;
  # left behind, they would pile up and each later start would look at
  # them, a cost no engine-driven node pays).
  case $v in
    rt-*-old) "$OLD_RUNTIME" --hpcc-config="$POLICY" --hpcc-runtime="$RUNC" --root "$RROOT" delete -f "$id" >/dev/null 2>&1 || true ;;
    rt-*) "$RUNTIME" --hpcc-config="$POLICY" --hpcc-runtime="$RUNC" --root "$RROOT" delete -f "$id" >/dev/null 2>&1 || true ;;
    *) "$RUNC" --root "$RROOT" delete -f "$id" >/dev/null 2>&1 || true ;;
  esac
  case $v in *-mpi | *-mpi-old) grep -q "^MPICH Version:.*4\.0" "$out" || { log "$v did not run the host MPICH:"; cat "$out" >&2; return 1; } ;; esac
  awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f\n", (e - s) * 1000}' >>"$W/t/$v"
  awk -v a="$(children_cpu "$W/cpu0")" -v b="$(children_cpu "$W/cpu1")" 'BEGIN {printf "%.3f\n", b - a}' >>"$W/t/$v.cpu"
}

# --- statistics --------------------------------------------------------------
stats() { # FILE -> "min median max"
  sort -g "$1" | awk '{a[NR]=$1} END {if (NR == 0) {print "nan nan nan"; exit}
    m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.2f %.2f %.2f\n", a[1], m, a[NR]}'
}
ratios() { # BASE HPCC -> "min median max" of per-round ratios
  paste "$1" "$2" | awk '{printf "%.4f\n", $2 / $1}' >"$W/ratio"
  sort -g "$W/ratio" | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
    printf "%.3f %.3f %.3f\n", a[1], m, a[NR]}'
}
ROWS=$W/rows
: >"$ROWS"
row() { # ID MEASURE "BASE min med max" "HPCC min med max" "RATIO min med max" TARGET(<=x or -) [LABEL]
  local id=$1 what=$2 b=$3 h=$4 r=$5 target=$6 label=${7:-"≤ $6"} verdict=-
  if [ "$target" != - ]; then
    verdict=$(awk -v m="$(echo "$r" | awk '{print $2}')" -v t="$target" 'BEGIN {print (m <= t) ? "PASS" : "MISSED"}')
  fi
  fmt() { echo "$1" | awk '{printf "%s / %s / %s", $1, $2, $3}'; }
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$id" "$what" "$(fmt "$b")" "$(fmt "$h")" "$(fmt "$r")" \
    "$([ "$target" = - ] && echo - || echo "$label")" "$verdict" >>"$ROWS"
}
lock() { exec 9>"$LOCK"; log "waiting for $LOCK"; flock 9; log "holding $LOCK"; }
unlock() { flock -u 9; exec 9>&-; log "released $LOCK"; }

# --- a-d (and Sarus): interleaved runc runs ---------------------------------
if has runc; then
  lock
  log "warm-up (page cache, per-boot caches)"
  for v in "${VARIANTS[@]}"; do start "$v" "w-$v"; done
  rm -f "$W"/t/*
  log "${#VARIANTS[@]} variants x $N rounds"
  for i in $(seq "$N"); do
    for v in $(printf '%s\n' "${VARIANTS[@]}" | shuf); do start "$v" "r$i-$v"; done
  done
  unlock
  mean() { awk '{s += $1} END {printf "%.2f", s / NR}' "$1"; }
  pair() {
    row "$1" "$2" "$(stats "$W/t/$3")" "$(stats "$W/t/$4")" "$(ratios "$W/t/$3" "$W/t/$4")" "$5"
    # The same runs in CPU time: what hpcc costs, whatever the neighbours
    # do. `times` prints whole milliseconds, so means, not medians.
    paste "$W/t/$3.cpu" "$W/t/$4.cpu" | awk '{printf "%.3f\n", $2 - $1}' >"$W/diff"
    local b h r
    b=$(mean "$W/t/$3.cpu") h=$(mean "$W/t/$4.cpu")
    r=$(awk -v b="$b" -v h="$h" 'BEGIN {printf "%.3f", h / b}')
    printf '| %s | %s | %s | %s (min %s, max %s) | %s | %s |\n' "$1" "$b" "$h" "$(mean "$W/diff")" \
      "$(sort -g "$W/diff" | head -1)" "$(sort -g "$W/diff" | tail -1)" "$r" \
      "$([ "$5" = - ] && echo - || awk -v m="$r" -v t="$5" 'BEGIN {print (m <= t) ? "within" : "over"}')" >>"$W/cpurows"
  }
  pair a "runc run via hpcc-runtime, mpi_replace, vs plain runc run" base-mpi rt-mpi 1.08
  pair b "runc run via hpcc-runtime, check only, vs plain runc run" base-chk rt-chk 1.03
  pair c "hpcc-hook mpi_replace vs a /bin/true hook" true-mpi hook-mpi 1.15
  pair d "hpcc-hook check only vs a /bin/true hook" true-chk hook-chk 1.05
  [ -f "$W/t/rt-mpi-old" ] && pair a0 "the same as a with OLD_RUNTIME (an earlier build)" base-mpi rt-mpi-old 1.08
  [ -f "$W/t/hook-mpi-old" ] && pair c0 "the same as c with OLD_HOOK (an earlier build)" true-mpi hook-mpi-old 1.15
  [ -f "$W/t/sarus-mpi" ] && pair S "Sarus MPI hook vs a /bin/true hook (same image, same run)" true-mpi sarus-mpi -
  # What each adds, in ms (median of per-round differences).
  for p in "base-mpi rt-mpi a" "base-chk rt-chk b" "true-mpi hook-mpi c" "true-chk hook-chk d" "true-mpi sarus-mpi S" "base-mpi rt-mpi-old a0" "true-mpi hook-mpi-old c0" "rt-mpi-old rt-mpi a-a0" "hook-mpi-old hook-mpi c-c0"; do
    set -- $p; [ -f "$W/t/$1" ] && [ -f "$W/t/$2" ] || continue
    paste "$W/t/$1" "$W/t/$2" | awk '{printf "%.3f\n", $2 - $1}' >"$W/diff"
    echo "$3 $(stats "$W/diff")" >>"$W/adds"
  done
fi

# --- e: planning -------------------------------------------------------------
if has plan; then
  log "planning, $PLAN_N fresh processes per variant"
  [ -d "$W/rt-mpi" ] || mk rt-mpi tests/work/rootfs/mpich-app "$MPIARGS" none $CPU "${MPI[@]}"
  nice -n 10 cargo bench -q -p hpcc-common --bench plan_cost --no-run 2>/dev/null
  cargo bench -q -p hpcc-common --bench plan_cost -- --bundle "$W/rt-mpi" --config "$POLICY" --runs "$PLAN_N" >"$W/plan.txt" 2>/dev/null
  nocache=$(awk '$1 == "plan_cost" && $2 == "nocache" {print $3, $4, $5}' "$W/plan.txt")
  cached=$(awk '$1 == "plan_cost" && $2 == "cache" {print $3, $4, $5}' "$W/plan.txt")
  # Absolute target: the "ratio" column is the median over 2 ms.
  r=$(echo "$cached" | awk '{printf "%.3f %.3f %.3f", $1 / 2, $2 / 2, $3 / 2}')
  row e "planning the MPICH image, ms (baseline: host cache off; ratio: over 2 ms)" "$nocache" "$cached" "$r" 1 "≤ 2 ms"
fi

# --- f: Slurm ----------------------------------------------------------------
if has slurm; then
  if ! command -v srun >/dev/null; then
    log "no Slurm installed: row f skipped"; echo "| f | Slurm step | skipped: no Slurm | | | ≤ 1.04 | - |" >>"$ROWS"
  else
    lock
    started_slurm=
    if ! srun -N1 -t 1 true >/dev/null 2>&1; then
      log "starting one-node Slurm (tests/setup/slurm.sh)"
      bash tests/setup/slurm.sh start >/dev/null; started_slurm=1
    fi
    cp -p /etc/slurm/plugstack.conf "$W/plugstack.orig" 2>/dev/null || : >"$W/plugstack.orig"
    cp -p /etc/slurm/oci.conf "$W/oci.orig" 2>/dev/null || : >"$W/oci.orig"
    SLURM_RESTORE="cp -p '$W/plugstack.orig' /etc/slurm/plugstack.conf; cp -p '$W/oci.orig' /etc/slurm/oci.conf"
    [ -n "$started_slurm" ] && SLURM_RESTORE+="; bash '$repo/tests/setup/slurm.sh' stop >/dev/null 2>&1"
    oci() { # RUNTIME-PREFIX
      cat >/etc/slurm/oci.conf <<EOC
RunTimeQuery="runc --root=/run/slurm-oci state %n.%u.%j.%s.%t"
RunTimeKill="runc --root=/run/slurm-oci kill -a %n.%u.%j.%s.%t"
RunTimeDelete="runc --root=/run/slurm-oci delete --force %n.%u.%j.%s.%t"
RunTimeRun="exec $1 --root=/run/slurm-oci run %n.%u.%j.%s.%t -b %b"
EOC
    }
    slurm_setup() {
      case $1 in
        none-*) : >/etc/slurm/plugstack.conf; oci "$RUNC" ;;
        full-*) echo "required $REL/libhpcc_spank.so config=$POLICY" >/etc/slurm/plugstack.conf
                oci "$RUNTIME --hpcc-slurm --hpcc-config=$POLICY --hpcc-node=%n --hpcc-runtime=$RUNC" ;;
        # SLURM_SPLIT: each half alone, to say which one costs what.
        plugin-*) echo "required $REL/libhpcc_spank.so config=$POLICY" >/etc/slurm/plugstack.conf; oci "$RUNC" ;;
        # OLD_SPANK: an earlier build's plugin, with this runtime.
        old-*) echo "required $OLD_SPANK config=$POLICY" >/etc/slurm/plugstack.conf
                oci "$RUNTIME --hpcc-slurm --hpcc-config=$POLICY --hpcc-node=%n --hpcc-runtime=$RUNC" ;;
        runtime-*) : >/etc/slurm/plugstack.conf
                oci "$RUNTIME --hpcc-slurm --hpcc-config=$POLICY --hpcc-node=%n --hpcc-runtime=$RUNC" ;;
      esac
    }
    step() { # CONFIG -> appends ms
      local b s e
      case $1 in *-chk) b=$W/base-chk args=/bin/true ;; none-mpi) b=$W/base-mpi args=/usr/bin/mpi-version ;; *-mpi) b=$W/rt-mpi args=/usr/bin/mpi-version ;; esac
      cp "$b/config.json.orig" "$b/config.json"
      slurm_setup "$1"
      s=$EPOCHREALTIME
      srun -N1 --container="$b" "$args" >"$W/out" 2>"$W/err" || { log "srun $1 failed:"; cat "$W/err" >&2; return 1; }
      e=$EPOCHREALTIME
      case $1 in none-mpi|full-mpi|runtime-mpi|old-mpi) grep -q "^MPICH Version:.*4\.0" "$W/out" || { log "$1 did not run the host MPICH"; cat "$W/out" "$W/err" >&2; return 1; } ;; esac
      awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f\n", (e - s) * 1000}' >>"$W/t/slurm-$1"
    }
    SCONF=(none-chk full-chk none-mpi full-mpi)
    [ -n "${SLURM_SPLIT:-}" ] && SCONF+=(plugin-chk runtime-chk plugin-mpi runtime-mpi)
    [ -n "${OLD_SPANK:-}" ] && SCONF+=(old-chk old-mpi)
    log "Slurm: ${#SCONF[@]} configurations x $SLURM_N rounds"
    for c in "${SCONF[@]}"; do step "$c"; done   # warm-up
    rm -f "$W"/t/slurm-*
    SLOG=$(scontrol show config 2>/dev/null | awk '$1 == "SlurmdLogFile" {print $3}')
    mark=$(wc -l <"$SLOG" 2>/dev/null || echo 0)
    for i in $(seq "$SLURM_N"); do
      for c in $(printf '%s\n' "${SCONF[@]}" | shuf); do step "$c"; done
    done
    # The plugin decided every hpcc step (its own timer, in slurmd's log).
    tail -n +"$((mark + 1))" "$SLOG" 2>/dev/null | grep -o 'hpcc: container .* may start.*decided in [0-9.]* ms' \
      | grep -o 'decided in [0-9.]*' | awk '{print $3}' >"$W/t/slurm-decided" || true
    decided_n=$(wc -l <"$W/t/slurm-decided")
    [ "$decided_n" -ge $((2 * SLURM_N)) ] || { log "the plugin logged $decided_n decisions for $((2 * SLURM_N)) hpcc steps"; exit 1; }
    SLURM_DECIDED="the plugin's own decision inside slurmstepd (slurmd's log, $decided_n steps): $(stats "$W/t/slurm-decided" | awk '{printf "%s / %s / %s ms", $1, $2, $3}')"
    eval "$SLURM_RESTORE"; SLURM_RESTORE=
    unlock
    spair() { row "$1" "$2" "$(stats "$W/t/slurm-$3")" "$(stats "$W/t/slurm-$4")" "$(ratios "$W/t/slurm-$3" "$W/t/slurm-$4")" "$5"; }
    spair f "srun --container step, plugin + hpcc-runtime vs no hpcc, check only" none-chk full-chk 1.04
    spair f2 "srun --container step, plugin + hpcc-runtime vs no hpcc, mpi_replace" none-mpi full-mpi 1.04
    if [ -n "${OLD_SPANK:-}" ]; then
      spair f0 "f with OLD_SPANK (an earlier build's plugin)" none-chk old-chk 1.04
      spair f20 "f2 with OLD_SPANK" none-mpi old-mpi 1.04
    fi
    if [ -n "${SLURM_SPLIT:-}" ]; then
      spair fp "f with the plugin only (plain runc)" none-chk plugin-chk 1.04
      spair fr "f with hpcc-runtime only (no plugin)" none-chk runtime-chk 1.04
      spair f2p "f2 with the plugin only (plain runc: the stand-in MPICH)" none-mpi plugin-mpi 1.04
      spair f2r "f2 with hpcc-runtime only (no plugin)" none-mpi runtime-mpi 1.04
    fi
    SLURM_VERSION=$(srun --version)
  fi
fi

# --- g: BURST containers at once ---------------------------------------------
if has burst; then
  lock
  # g: BURST containers of ONE bundle started at the same instant, as a
  # parallel launcher (pdsh, clush, srun across nodes) starts one job's
  # containers. The bundle directory and its rootfs are read-only bind
  # mounts, as an image on a shared file system is: nothing of hpcc may
  # write to either. Cold: hpcc's per-boot cache ([cache] dir: the
  # fingerprint, host-libs.json, the linker-cache store) removed just
  # before the burst, as on the first start after boot; warm: the burst
  # that follows, with the cache the cold one filled.
  RO=$W/ro
  ro_bind() { # SRC DST: DST = read-only bind mount of SRC (undone by cleanup)
    mkdir -p "$2"; mount --bind "$1" "$2"; RO_MOUNTS=("$2" "${RO_MOUNTS[@]}"); mount -o remount,bind,ro "$2"
  }
  ro_bundle() { # NAME ROOTFS HOOK -> read-only bundle $RO/NAME
    local name=$1 rootfs=$2 hook=$3
    ro_bind "$rootfs" "$W/img-$name"
    ROOTFS_MODE=ref mk "bundle-$name" "$W/img-$name" "$MPIARGS" "$hook" $CPU "${MPI[@]}"
    ro_bind "$W/bundle-$name" "$RO/$name"
    # runc creates a mount's missing destination in the rootfs: the
    # one-off creation of what a read-only image cannot get happens here,
    # on the writable fixture, before the image is frozen (an image on a
    # read-only file system must carry them, or hpcc must not need them).
  }
  ro_bundle plain "$W/mpich-host" none
  ro_bundle runtime tests/work/rootfs/mpich-app none
  ro_bundle hook tests/work/rootfs/mpich-app hpcc
  sha_before=$(cat "$RO"/*/config.json | sha256sum)
  burst() { # KIND(plain|runtime|hook) PHASE -> per-container ms in $W/t/burst-KIND-PHASE; prints started count
    local kind=$1 phase=$2 i b=$RO/$1 tag=$1-$2
    rm -rf "$W/burst" && mkdir -p "$W/burst"
    [ "$phase" = cold ] && rm -rf "$W/cache"
    local t0=$EPOCHREALTIME
    for i in $(seq "$BURST"); do
      (
        o=$W/burst/c$i s=$EPOCHREALTIME
        if [ "$kind" = runtime ]; then
          "$RUNTIME" --hpcc-config="$POLICY" --hpcc-runtime="$RUNC" --root "$RROOT" run --bundle "$b" "g-$tag-$i" >"$o.out" 2>"$o.err"
        else
          "$RUNC" --root "$RROOT" run --bundle "$b" "g-$tag-$i" >"$o.out" 2>"$o.err"
        fi
        rc=$? e=$EPOCHREALTIME
        echo "$rc $s $e" >"$o.time"
      ) &
    done
    wait
    local t1=$EPOCHREALTIME ok=0
    : >"$W/t/burst-$tag"
    for i in $(seq "$BURST"); do
      o=$W/burst/c$i
      read -r rc s e <"$o.time"
      if [ "$rc" = 0 ] && grep -q "^MPICH Version:.*4\.0" "$o.out"; then ok=$((ok + 1)); else
        log "burst $tag container $i failed (rc $rc): $(head -c 300 "$o.err")"; fi
      awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f\n", (e - s) * 1000}' >>"$W/t/burst-$tag"
      "$RUNC" --root "$RROOT" delete -f "g-$tag-$i" >/dev/null 2>&1 || true
    done
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f\n", (b - a) * 1000}' >"$W/t/burst-$tag.span"
    echo "$ok"
  }
  pct() { sort -g "$1" | awk -v p="$2" '{a[NR]=$1} END {i = int(p * NR + 0.999999); if (i < 1) i = 1; print a[i]}'; }
  log "$BURST containers of one read-only bundle at once: plain runc, hpcc-runtime, hpcc-hook (cold and warm cache)"
  # plain runc has no cache: its two bursts are two samples of the baseline
  for kp in "plain cold" "runtime cold" "hook cold" "plain warm" "runtime warm" "hook warm"; do
    set -- $kp
    ok=$(burst "$1" "$2")
    echo "$1 $2 $ok $(pct "$W/t/burst-$1-$2" 0.5) $(pct "$W/t/burst-$1-$2" 0.95) $(pct "$W/t/burst-$1-$2" 0.99) $(sort -g "$W/t/burst-$1-$2" | tail -1) $(cat "$W/t/burst-$1-$2.span")" >>"$W/burst.txt"
  done
  [ "$(cat "$RO"/*/config.json | sha256sum)" = "$sha_before" ] && BUNDLE_SAME=yes || BUNDLE_SAME=no
  unlock
fi

# --- the table ---------------------------------------------------------------
{
  echo "### Results ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), $(runc --version | head -1)${SLURM_VERSION:+, $SLURM_VERSION}."
  echo "Rounds: N=$N (runc), SLURM_N=$SLURM_N, PLAN_N=$PLAN_N; command: \`bash tests/bench/run-all.sh $N\`${SARUS_MPI_HOOK:+ with SARUS_MPI_HOOK}."
  echo "$IMAGES_NOTE."
  echo
  echo "| | measure | baseline ms min / median / max | hpcc ms min / median / max | ratio (per round) min / median / max | target (median) | result |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  cat "$ROWS"
  [ -n "${SLURM_DECIDED:-}" ] && { echo; echo "Slurm: $SLURM_DECIDED."; }
  if [ -f "$W/cpurows" ]; then
    echo
    echo "The same runs in CPU time (user + sys of every process of the start: runtime, hooks, helpers, container; means over the rounds, ms):"
    echo
    echo "| | baseline CPU ms | hpcc CPU ms | adds CPU ms, mean | ratio of means | vs the same target |"
    echo "| --- | --- | --- | --- | --- | --- |"
    cat "$W/cpurows"
  fi
  if [ -f "$W/adds" ]; then
    echo
    echo "What each adds (hpcc minus its baseline of the same round, ms, min / median / max):"
    echo
    echo "| | adds ms |"
    echo "| --- | --- |"
    awk '{printf "| %s | %s / %s / %s |\n", $1, $2, $3, $4}' "$W/adds"
  fi
  if [ -f "$W/burst.txt" ]; then
    echo
    echo "$BURST containers of one read-only bundle (bundle and rootfs on read-only bind mounts) started at the same instant (mpi-version, mpi_replace; per-container wall ms from its own start; cold: hpcc's per-boot cache removed before the burst; plain runc has no cache, its two bursts are two baseline samples; p99 ratio against the plain burst of the same phase):"
    echo
    echo "| how | cache | started | p50 ms | p95 ms | p99 ms | max ms | all done after ms | p99 / plain |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    awk -v n="$BURST" '{p99[$2 " " $1] = $6} {rows[NR] = $0} END {
      for (i = 1; i <= NR; i++) { split(rows[i], f, " ")
        name = (f[1] == "plain" ? "plain runc (baseline image)" : f[1] == "runtime" ? "hpcc-runtime" : "runc + hpcc-hook")
        printf "| %s | %s | %s / %s | %s | %s | %s | %s | %s | %.3f |\n", name, f[2], f[3], n, f[4], f[5], f[6], f[7], f[8], f[6] / p99[f[2] " plain"] } }' "$W/burst.txt"
    awk -v n="$BURST" '$3 != n {bad = 1} END {exit bad}' "$W/burst.txt" && g=PASS || g=MISSED
    g2=$(awk '{p99[$2 " " $1] = $6} END {r1 = p99["warm runtime"] / p99["warm plain"]; r2 = p99["warm hook"] / p99["warm plain"]
      printf "%s (hpcc-runtime %.3f, hpcc-hook %.3f)", (r1 <= 1.10 && r2 <= 1.10) ? "PASS" : "MISSED", r1, r2}' "$W/burst.txt")
    echo
    echo "g (all $BURST start, through hpcc-runtime and through hpcc-hook, cold and warm): $g"
    echo
    echo "g2 (p99 warm within 1.10 of plain runc): $g2"
    echo
    echo "The bundles' config.json unchanged after the bursts: $BUNDLE_SAME"
  fi
} | tee "$OUT"
log "table written to $OUT"
