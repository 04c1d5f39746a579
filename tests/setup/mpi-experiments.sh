#!/usr/bin/env bash
# mpi-experiments.sh [GROUP...]   GROUP: bare pmi2 pmix ntasks failfast cpuinfo timing (default: all)
#
# Re-runs the experiments behind tests/setup/MPI-RIG.md on the two-node rig
# (slurm2.sh), each bounded by a timeout, and prints one line per check:
#   RESULT <name> PASS|FAIL <seconds> <what was seen>
# then "N passed, N failed". Outputs, wrapper logs and SPANK logs go to
# $OUT (default /tmp/hpcc-mpirig-out). Needs root; ~3 minutes on 2 cores.
# The rig is started here (takes /tmp/hpcc-e2e.lock) and stopped at the end
# unless KEEP=1. Fixtures: build-mpi-fixtures.sh (run here if needed).
set -uo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=$repo/tests/work
OUT=${OUT:-/tmp/hpcc-mpirig-out}
B=$WORK/bundles BIN=$WORK/mpi/bin
WRAP=$here/mpi-wrapper.sh
PROBE=$WORK/mpi/spank_probe.so
CTL=/tmp/hpcc-slurm2/wrapper.env
export SLURM_CONF=/tmp/hpcc-slurm2/etc/slurm.conf
groups=${*:-bare pmi2 pmix ntasks failfast cpuinfo timing}
pass=0 fail=0

log() { printf '[mpi-experiments] %s\n' "$*" >&2; }
result() {  # NAME OK(0/1) SECONDS TEXT
  if [ "$2" = 0 ]; then pass=$((pass + 1)); s=PASS; else fail=$((fail + 1)); s=FAIL; fi
  printf 'RESULT %-28s %s %6.2fs %s\n' "$1" "$s" "$3" "$4"
}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
wrapper() { printf 'WRAP_LOG=%s/wrap-%s\n' "$OUT" "$1" >"$CTL"; shift; printf '%s\n' "$@" >>"$CTL"; }
plugstack() { printf '%s\n' "$@" >"$OUT/plugstack.conf"; }
# run NAME TIMEOUT SRUN-ARGS... : output in $OUT/NAME.out, sets rc and dt
run() {
  local name=$1 to=$2; shift 2
  local t0; t0=$(now)
  (cd /tmp && timeout "$to" srun "$@") >"$OUT/$name.out" 2>&1; rc=$?
  dt=$(since "$t0")
  # a hung step must not outlive its experiment
  scancel -u root >/dev/null 2>&1; sleep 0.5
}
has() { grep -q -- "$2" "$OUT/$1.out"; }
two_ok() {  # NAME LIBPATTERN: ranks 0 and 1 of 2, sum 3 ok, the right library
  grep -q "^rank 0 of 2 sum 3 ok.*lib=$2" "$OUT/$1.out" && grep -q "^rank 1 of 2 sum 3 ok.*lib=$2" "$OUT/$1.out"
}
first() { grep -m1 -- "$2" "$OUT/$1.out" | cut -c1-150; }

# ------------------------------------------------------------------- setup ---
[ "$(id -u)" -eq 0 ] || { echo "must run as root" >&2; exit 1; }
mkdir -p "$OUT"; rm -rf "$OUT"/wrap-* "$OUT"/spank.log
"$here/build-mpi-fixtures.sh" >&2 || exit 1
gcc -O2 -Wall -shared -fPIC -o "$PROBE" "$here/src/spank_probe.c" -ldl || exit 1
for n in mpich-ring ompi-ring; do
  [ -f "$B/$n/config.json" ] || ARGS='["/usr/bin/ring"]' "$here/make-bundle.sh" "$WORK/rootfs/$n" "$B/$n" >&2
done
sed -e 's/^model name.*/model name\t: HPCC fake old CPU/' \
    -e '/^flags/s/ avx512[a-z_0-9]*//g; /^flags/s/ amx[a-z_0-9]*//g' /proc/cpuinfo >"$OUT/cpuinfo-old"
plugstack "optional $PROBE log=$OUT/spank.log"
start_rig() {
  SLURM2_OCI_RUNTIME="${1:-$WRAP --hpcc-node=%n}" SLURM2_PLUGSTACK=$OUT/plugstack.conf \
    SLURM2_N2_CPUINFO=$OUT/cpuinfo-old "$here/slurm2.sh" start >&2 || exit 1
}
start_rig
[ "${KEEP:-}" = 1 ] || trap '"$here/slurm2.sh" stop >&2' EXIT
ring() { echo --container="$B/$1-ring" /usr/bin/ring; }
N2="-N2 --ntasks-per-node=1"

for g in $groups; do case $g in
bare)
  run bare-pmi2 30 $N2 --mpi=pmi2 "$BIN/ring-mpich"
  two_ok bare-pmi2 "MPICH Version"; result bare-pmi2 $? "$dt" "$(first bare-pmi2 'rank 1')"
  run bare-pmix 30 $N2 --mpi=pmix "$BIN/ring-ompi"
  two_ok bare-pmix "Open MPI v4"; result bare-pmix $? "$dt" "$(first bare-pmix 'rank 1')"
  run bare-pingpong-mpich 60 $N2 --mpi=pmi2 "$BIN/pingpong-mpich"
  has bare-pingpong-mpich 'bytes=4194304'; result bare-pingpong-mpich $? "$dt" "$(grep pingpong "$OUT/bare-pingpong-mpich.out" | tr '\n' ' ')"
  run bare-pingpong-ompi 60 $N2 --mpi=pmix "$BIN/pingpong-ompi"
  has bare-pingpong-ompi 'bytes=4194304'; result bare-pingpong-ompi $? "$dt" "$(grep pingpong "$OUT/bare-pingpong-ompi.out" | tr '\n' ' ')"
  ;;
pmi2)
  wrapper pmi2-none WRAP_FIX=none WRAP_INJECT=mpich
  run ctr-pmi2-asis 30 $N2 --mpi=pmi2 $(ring mpich)
  [ "$(grep -c '^rank 0 of 1 sum 1 ok' "$OUT/ctr-pmi2-asis.out")" = 2 ]
  result ctr-pmi2-asis-singletons $? "$dt" "today: $(first ctr-pmi2-asis 'rank 0 of 1')"
  wrapper pmi2-fix WRAP_FIX=pmi2 WRAP_INJECT=mpich
  run ctr-pmi2-fix 30 $N2 --mpi=pmi2 $(ring mpich)
  two_ok ctr-pmi2-fix "MPICH Version"; result ctr-pmi2-fix $? "$dt" "$(first ctr-pmi2-fix 'rank 1')"
  run ctr-pmi2-fix-pingpong 30 $N2 --mpi=pmi2 --container="$B/mpich-ring" /usr/bin/pingpong
  has ctr-pmi2-fix-pingpong 'bytes=4194304'; result ctr-pmi2-pingpong $? "$dt" "$(grep pingpong "$OUT/ctr-pmi2-fix-pingpong.out" | tr '\n' ' ')"
  wrapper pmi2-keepnet WRAP_FIX=pmi2 WRAP_INJECT=mpich WRAP_KEEPNET=1
  run ctr-pmi2-keepnet 30 $N2 --mpi=pmi2 $(ring mpich)
  has ctr-pmi2-keepnet 'Destination is unreachable'; result ctr-pmi2-own-netns-fails $? "$dt" "$(first ctr-pmi2-keepnet 'UCX  ERROR' | cut -c1-120)"
  wrapper pmi2-noinject WRAP_FIX=pmi2 WRAP_INJECT=none
  run ctr-pmi2-noinject 30 $N2 --mpi=pmi2 $(ring mpich)
  has ctr-pmi2-noinject 'sum 1 BAD.*stand-in'; result ctr-pmi2-image-mpi-standin $? "$dt" "$(first ctr-pmi2-noinject 'rank 1')"
  ;;
pmix)
  wrapper pmix-none WRAP_FIX=none WRAP_INJECT=ompi
  run ctr-pmix-asis 30 $N2 --mpi=pmix $(ring ompi)
  has ctr-pmix-asis "not built with SLURM's PMI support"; result ctr-pmix-asis-fails $? "$dt" "today: $(first ctr-pmix-asis 'OPAL ERROR')"
  plugstack "optional $PROBE log=$OUT/spank.log capture=1"
  wrapper pmix-fix WRAP_FIX=pmix WRAP_INJECT=ompi
  run ctr-pmix-fix 60 $N2 --mpi=pmix $(ring ompi)
  two_ok ctr-pmix-fix "Open MPI v4"; result ctr-pmix-fix-spank $? "$dt" "$(first ctr-pmix-fix 'rank 1')"
  run ctr-pmix-fix-pingpong 30 $N2 --mpi=pmix --container="$B/ompi-ring" /usr/bin/pingpong
  has ctr-pmix-fix-pingpong 'bytes=4194304'; result ctr-pmix-pingpong $? "$dt" "$(grep pingpong "$OUT/ctr-pmix-fix-pingpong.out" | tr '\n' ' ')"
  wrapper pmix-keepnet WRAP_FIX=pmix WRAP_INJECT=ompi WRAP_KEEPNET=1
  run ctr-pmix-keepnet 60 $N2 --mpi=pmix $(ring ompi)
  has ctr-pmix-keepnet 'Unreachable in file ext3x_client.c'; result ctr-pmix-own-netns-fails $? "$dt" "$(first ctr-pmix-keepnet 'OPAL ERROR')"
  wrapper pmix-notmpfs WRAP_FIX=pmix WRAP_INJECT=ompi WRAP_PMIX_NOTMPFS=1
  run ctr-pmix-notmpfs 60 $N2 --mpi=pmix $(ring ompi)
  has ctr-pmix-notmpfs 'session_dir.c'; result ctr-pmix-no-tmpfs-fails $? "$dt" "$(first ctr-pmix-notmpfs 'ORTE_ERROR_LOG')"
  wrapper pmix-nospool WRAP_FIX=pmix WRAP_INJECT=ompi WRAP_PMIX_NOSPOOL=1
  run ctr-pmix-nospool 60 $N2 --mpi=pmix $(ring ompi)
  two_ok ctr-pmix-nospool "Open MPI v4" && has ctr-pmix-nospool 'gds_ds12_lock_pthread.c'
  result ctr-pmix-no-spool-noisy $? "$dt" "$(first ctr-pmix-nospool 'PMIX ERROR')"
  plugstack "optional $PROBE log=$OUT/spank.log"
  wrapper pmix-derive WRAP_FIX=pmix WRAP_INJECT=ompi WRAP_PMIX_DERIVE=1
  run ctr-pmix-derive 60 $N2 --mpi=pmix $(ring ompi)
  two_ok ctr-pmix-derive "Open MPI v4"; result ctr-pmix-fix-derived $? "$dt" "$(first ctr-pmix-derive 'rank 1')"
  ;;
ntasks)
  plugstack "optional $PROBE log=$OUT/spank.log"
  wrapper ntasks WRAP_FIX=pmi2 WRAP_INJECT=mpich
  run ctr-2pernode 30 -N2 -n4 --mpi=pmi2 $(ring mpich)
  has ctr-2pernode 'Task launch for StepId=.* failed on node n1: Unspecified error'
  result ctr-2-tasks-per-node-slurm $? "$dt" "$(first ctr-2pernode 'Task launch')"
  plugstack "required $PROBE log=$OUT/spank.log check_ntasks=1"
  run ctr-2pernode-spank 30 -N2 -n4 --mpi=pmi2 $(ring mpich)
  has ctr-2pernode-spank 'hpcc: --container runs one task per node'
  result ctr-2-tasks-per-node-spank $? "$dt" "$(first ctr-2pernode-spank 'hpcc:')"
  run bare-2pernode-spank 30 -N1 -n2 true
  [ "$rc" = 0 ]; result bare-2pernode-not-refused $? "$dt" "rc=$rc"
  plugstack "optional $PROBE log=$OUT/spank.log"
  ;;
failfast)
  # n2 refuses; n1 waits in MPI_Init (PMI-2 fence). 20 s bound: rc 124 = still alive.
  wrapper ff-rt WRAP_FIX=pmi2 WRAP_INJECT=mpich WRAP_FAIL_NODE=n2
  run ff-runtime-exit1 20 $N2 --mpi=pmi2 $(ring mpich)
  [ "$rc" = 124 ]; result ff-runtime-exit-hangs $? "$dt" "rc=$rc (124: step still alive at 20 s)"
  run ff-runtime-exit1-K1 20 $N2 -K1 --mpi=pmi2 $(ring mpich)
  [ "$rc" != 124 ]; result ff-runtime-exit-srun-K1 $? "$dt" "rc=$rc $(first ff-runtime-exit1-K1 'CANCELLED')"
  wrapper ff-rt-kill WRAP_FIX=pmi2 WRAP_INJECT=mpich WRAP_FAIL_NODE=n2 WRAP_FAIL_KILL=1
  run ff-runtime-scancel 20 $N2 --mpi=pmi2 $(ring mpich)
  [ "$rc" != 124 ] && has ff-runtime-scancel 'refusing on n2'; result ff-runtime-scancel $? "$dt" "rc=$rc $(first ff-runtime-scancel 'refusing')"
  wrapper ff-spank WRAP_FIX=pmi2 WRAP_INJECT=mpich
  plugstack "required $PROBE log=$OUT/spank.log fail_node=n2 fail_at=task_init_privileged"
  run ff-spank-fail 20 $N2 --mpi=pmi2 $(ring mpich)
  [ "$rc" = 124 ]; result ff-spank-fail-hangs $? "$dt" "rc=$rc $(first ff-spank-fail 'refusing')"
  plugstack "required $PROBE log=$OUT/spank.log fail_node=n2 fail_at=task_init_privileged fail_kill=1"
  run ff-spank-kill 20 $N2 --mpi=pmi2 $(ring mpich)
  [ "$rc" != 124 ] && has ff-spank-kill 'refusing on node n2'; result ff-spank-kill_job_step $? "$dt" "rc=$rc $(first ff-spank-kill 'refusing')"
  plugstack "optional $PROBE log=$OUT/spank.log fail_node=n2 fail_at=task_init_privileged"
  run ff-spank-optional 20 $N2 --mpi=pmi2 $(ring mpich)
  two_ok ff-spank-optional "MPICH"; result ff-optional-plugin-ignored $? "$dt" "$(first ff-spank-optional 'refusing')"
  plugstack "optional $PROBE log=$OUT/spank.log"
  ;;
cpuinfo)
  wrapper cpu0 WRAP_CPUINFO=0
  q='echo "$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2) avx512f=$(grep -m1 -c -w avx512f /proc/cpuinfo)"'
  run cpu-bare 30 -N2 -l /bin/sh -c "$q"
  has cpu-bare '^1: *HPCC fake old CPU avx512f=0' && ! has cpu-bare '^0: *HPCC'
  result cpuinfo-bare-task-n2 $? "$dt" "$(sort "$OUT/cpu-bare.out" | tr '\n' ' ')"
  run cpu-ctr 30 -N2 -l --container="$B/mpich-ring" /bin/sh -c "$q"
  ! has cpu-ctr 'HPCC'; result cpuinfo-container-real $? "$dt" "$(sort "$OUT/cpu-ctr.out" | tr '\n' ' ')"
  grep -h 'cpuinfo:' "$OUT"/wrap-cpu0/n2.* | tail -1 | grep -q 'HPCC'
  result cpuinfo-runtime-n2 $? 0 "$(grep -h 'cpuinfo:' "$OUT"/wrap-cpu0/n2.* | tail -1)"
  wrapper cpu1 WRAP_CPUINFO=1
  run cpu-ctr-bind 30 -N2 -l --container="$B/mpich-ring" /bin/sh -c "$q"
  has cpu-ctr-bind '^1: *HPCC fake old CPU avx512f=0'; result cpuinfo-container-bound $? "$dt" "$(sort "$OUT/cpu-ctr-bind.out" | tr '\n' ' ')"
  ;;
timing)
  # step start: bare vs container with plain runc (no wrapper): restart the rig with runc.
  start_rig runc
  for k in bare ctr; do
    ts=()
    for i in 1 2 3 4 5; do
      if [ $k = bare ]; then run t-$k 30 $N2 /bin/true; else run t-$k 30 $N2 --container="$B/mpich-ring" /bin/true; fi
      ts+=("$dt")
    done
    med=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 3p)
    result "step-start-$k-runc" "$rc" "$med" "srun -N2 true x5, median; all: ${ts[*]}"
  done
  start_rig
  ;;
*) log "unknown group $g" ;;
esac; done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
