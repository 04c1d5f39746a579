#!/bin/bash
# mpi-wrapper.sh - experimental oci.conf RunTimeRun wrapper (NOT the product:
# the prototype of what hpcc-runtime must do; see tests/setup/MPI-RIG.md).
#
# oci.conf: RunTimeRun="/path/mpi-wrapper.sh [--hpcc-node=%n] --root=R run %n.%u.%j.%s.%t -b %b"
# (slurm2.sh: SLURM2_OCI_RUNTIME="/path/mpi-wrapper.sh --hpcc-node=%n").
# slurmstepd runs it with an almost empty environment, so its knobs come
# from a file, $HPCC_WRAP_CTL (default /tmp/hpcc-slurm2/wrapper.env), sourced:
#   WRAP_LOG=DIR        log argv, env, fds, the spooled config.json (process.env,
#                       mounts, namespaces) before and after the edits to DIR/<id>.log
#   WRAP_FIX=none|auto|pmi2|pmix   auto: by SLURM_MPI_TYPE of process.env
#       pmi2: PMI socket -> fd 3, runc run --preserve-fds=1, process.env +=
#             PMI_FD=3 PMI_RANK PMI_SIZE PMI_JOBID, drop the network namespace
#       pmix: process.env += the per-task PMIX_* (captured by the SPANK probe
#             spank_probe.so capture=1: env, or /run/hpcc/task-env-J.S.T) and PMIX_RANK,
#             bind the pmix.J.S spool dir and TmpFS, drop the network namespace
#   WRAP_HOSTNET=0|1    drop the network namespace even without a fix
#   WRAP_INJECT=none|mpich|ompi   bind the host MPI (tests/work/mpi/inject-*.txt)
#                       at /opt/hpcc/lib (+ LD_LIBRARY_PATH) into the container
#   WRAP_FAIL_NODE=NODE exit 1 on that node before runc (fail-fast experiments)
#   WRAP_FAIL_SLEEP=S   ... after sleeping S seconds
#   WRAP_FAIL_KILL=0|1  ... after `scancel --signal=KILL JOB.STEP` (fail-fast fix)
#   WRAP_CPUINFO=0|1    bind the node's /proc/cpuinfo into the container
#   WRAP_KEEPNET=0|1    keep the container's network namespace even with a fix
#   WRAP_PMIX_NOSPOOL=1, WRAP_PMIX_NOTMPFS=1   pmix: leave out the spool / TmpFS bind
#   WRAP_PMIX_DERIVE=1  pmix without the SPANK capture: derive the PMIX_* vars
#                       (server URI from the parent slurmstepd's loopback listener)
set -u
ctl=${HPCC_WRAP_CTL:-/tmp/hpcc-slurm2/wrapper.env}
WRAP_LOG=/tmp/hpcc-mpirig-out/wrap WRAP_FIX=none WRAP_HOSTNET=0 WRAP_INJECT=none
WRAP_FAIL_NODE= WRAP_FAIL_SLEEP=0 WRAP_FAIL_KILL=0 WRAP_CPUINFO=0 WRAP_KEEPNET=0
WRAP_PMIX_NOSPOOL=0 WRAP_PMIX_NOTMPFS=0 WRAP_PMIX_DERIVE=0
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC1090
[ -r "$ctl" ] && . "$ctl"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
t_start=$(date +%s.%N)

# --- arguments: [--hpcc-node=N] runc-global-args... run [opts] ID -b BUNDLE ---
node= args=() id= bundle=
for a in "$@"; do
  case $a in --hpcc-node=*) node=${a#--hpcc-node=} ;; *) args+=("$a") ;; esac
done
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    -b|--bundle) bundle=${args[i+1]} ;;
    run) id=${args[i+1]} ;;
  esac
done
[ -n "$node" ] || node=${id%%.*}   # %n.%u.%j.%s.%t: the id starts with the node name
cfg=$bundle/config.json
mkdir -p "$WRAP_LOG"
L=$WRAP_LOG/$id.log
exec 19>>"$L"
log() { printf '%s\n' "$*" >&19; }
log "=== $(date +%T.%N) node=$node pid=$$ ppid=$PPID ($(cat /proc/$PPID/comm), its cmdline: $(tr '\0' ' ' </proc/$PPID/cmdline)) argv: $0 $*"
log "--- env:"; env | sort >&19
log "--- fds:"; ls -l /proc/$$/fd >&19 2>&1
log "--- /proc/cpuinfo: $(grep -m1 "model name" /proc/cpuinfo), avx512f flag: $(grep -m1 -c -w avx512f /proc/cpuinfo)"
log "--- mnt ns $(readlink /proc/$$/ns/mnt) net ns $(readlink /proc/$$/ns/net) cwd $(pwd)"
log "--- bundle $bundle: $(ls -la "$bundle" 2>&1 | tr '\n' ' ')"
dump_cfg() {
  log "--- config.json $1: process.env:"; jq -r '.process.env[]' "$cfg" >&19
  log "--- mounts:"; jq -c '.mounts[]' "$cfg" >&19
  log "--- namespaces: $(jq -c '.linux.namespaces' "$cfg")"
  log "--- args: $(jq -c '.process.args' "$cfg") root: $(jq -c '.root' "$cfg") cwd: $(jq -c .process.cwd "$cfg")"
}
dump_cfg before
penv() { jq -r --arg k "$1" '.process.env[] | select(startswith($k + "=")) | sub("^[^=]*="; "")' "$cfg" | tail -1; }

edit() {  # jq filter + args: edit config.json in place
  local tmp; tmp=$(mktemp "$bundle/.cfg.XXXXXX")
  jq "$@" "$cfg" >"$tmp" && mv "$tmp" "$cfg" || { log "jq failed: $*"; rm -f "$tmp"; exit 97; }
}
setenv() {  # KEY VALUE: set or replace in process.env
  edit --arg k "$1" --arg v "$2" '.process.env = ([.process.env[] | select(startswith($k + "=") | not)] + [$k + "=" + $v])'
}
bind() {  # SRC DEST [ro]
  edit --arg s "$1" --arg d "$2" '.mounts += [{destination: $d, type: "bind", source: $s,
      options: ["rbind", "ro", "nosuid", "nodev", "rprivate"]}]'
}
bind_rw() {
  edit --arg s "$1" --arg d "$2" '.mounts += [{destination: $d, type: "bind", source: $s,
      options: ["rbind", "rw", "nosuid", "nodev", "rprivate"]}]'
}
nohostnet() { [ "$WRAP_KEEPNET" = 1 ] || edit '.linux.namespaces |= map(select(.type != "network"))'; }

# --- hostlist expansion: n[1-2],m3 -> n1 n2 m3 (ranges and lists in brackets) ---
hostlist() {
  local s=$1 out=() part pre rng r a b w
  # split at commas outside brackets
  local depth=0 cur= c
  for ((k = 0; k < ${#s}; k++)); do
    c=${s:k:1}
    case $c in
      '[') depth=$((depth + 1)); cur+=$c ;;
      ']') depth=$((depth - 1)); cur+=$c ;;
      ',') if [ $depth = 0 ]; then out+=("$cur"); cur=; else cur+=$c; fi ;;
      *) cur+=$c ;;
    esac
  done
  out+=("$cur")
  for part in "${out[@]}"; do
    if [[ $part == *\[*\]* ]]; then
      pre=${part%%\[*}; rng=${part#*\[}; rng=${rng%\]*}
      IFS=, read -ra rs <<<"$rng"
      for r in "${rs[@]}"; do
        if [[ $r == *-* ]]; then a=${r%-*}; b=${r#*-}; w=${#a}
          for ((n = 10#$a; n <= 10#$b; n++)); do printf '%s%0*d\n' "$pre" "$w" "$n"; done
        else echo "$pre$r"; fi
      done
    else echo "$part"; fi
  done
}
# --- PMI process mapping: rank of local task T on node index NI ---
# (vector,(start,nnodes,ppn),...): blocks of ranks, repeated cyclically until NTASKS ranks are placed.
pmi_rank() {  # MAPPING NODEINDEX LOCALTASK NTASKS
  local m=$1 ni=$2 t=$3 nt=$4 r=0 seen=0 blk s nn ppn j q
  local blocks; blocks=$(sed 's/^(vector,//; s/)$//; s/),(/)\n(/g' <<<"$m" | tr -d '()')
  while [ $r -lt "$nt" ]; do
    while IFS=, read -r s nn ppn; do
      for ((j = s; j < s + nn; j++)); do
        for ((q = 0; q < ppn; q++)); do
          [ $r -lt "$nt" ] || break 3
          if [ "$j" = "$ni" ]; then [ $seen = "$t" ] && { echo $r; return; }; seen=$((seen + 1)); fi
          r=$((r + 1))
        done
      done
    done <<<"$blocks"
  done
  echo -1
}

mpi=$(penv SLURM_MPI_TYPE)
fix=$WRAP_FIX; [ "$fix" = auto ] && fix=${mpi:-none}
nodes=$(hostlist "$(penv SLURM_STEP_NODELIST)")
ni=$(grep -nx -- "$node" <<<"$nodes" | cut -d: -f1); ni=$((${ni:-0} - 1))
jobid=$(penv SLURM_JOB_ID) stepid=$(penv SLURM_STEP_ID) ntasks=$(penv SLURM_NTASKS)
log "--- derived: mpi=$mpi fix=$fix node=$node index=$ni of [$(echo $nodes)] job=$jobid step=$stepid ntasks=$ntasks"

if [ -n "$WRAP_FAIL_NODE" ] && [ "$node" = "$WRAP_FAIL_NODE" ]; then
  sleep "$WRAP_FAIL_SLEEP"
  # The message first: the kill below also ends this process.
  echo "mpi-wrapper: refusing on $node (test)" >&2
  log "$(date +%T.%N) failing on purpose (WRAP_FAIL_NODE=$node)"
  if [ "$WRAP_FAIL_KILL" = 1 ]; then
    log "$(date +%T.%N) failing: scancel --signal=KILL $jobid.$stepid"
    timeout 10 scancel --signal=KILL "$jobid.$stepid" >&19 2>&1
  fi
  exit 1
fi

runc_pre=() runc_post=()
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = run ] && { runc_pre=("${args[@]:0:i+1}"); runc_post=("${args[@]:i+1}"); break; }
done
preserve=()

case $fix in
  pmi2)
    # The PMI-2 socket: the one socket among fds > 2 (Slurm's PMI_FD).
    sfd=
    for f in /proc/$$/fd/*; do
      n=${f##*/}; [ "$n" -gt 2 ] 2>/dev/null || continue; [ "$n" = 19 ] && continue
      case $(readlink "$f") in socket:*) sfd=$n ;; esac
    done
    [ -n "$sfd" ] || { log "no socket fd: cannot wire PMI-2"; echo "mpi-wrapper: no PMI-2 socket" >&2; exit 98; }
    map=$(penv SLURM_PMI2_PROC_MAPPING)
    rank=$(pmi_rank "$map" "$ni" 0 "$ntasks")
    # The task's own PMI_RANK, when a SPANK plugin setenv()s it in task_init
    # (exact; the mapping is wrong for -m arbitrary), else the mapping.
    log "--- pmi2: socket fd $sfd -> 3; mapping $map -> rank $rank; PMI_RANK in our env: ${PMI_RANK:-none}"
    rank=${PMI_RANK:-$rank}
    eval "exec 3<&$sfd $sfd<&-"
    preserve=(--preserve-fds=1)
    setenv PMI_FD 3; setenv PMI_RANK "$rank"; setenv PMI_SIZE "$ntasks"; setenv PMI_JOBID "$jobid.$stepid"
    nohostnet
    ;;
  pmix)
    map=$(penv SLURM_PMIX_MAPPING_SERV)
    rank=$(pmi_rank "$map" "$ni" 0 "$ntasks")
    # Per-task PMIX_* vars: from our own environment (the SPANK probe with
    # capture=1 setenv()s them in the task before slurmstepd execs us), else
    # from the file it wrote in the node-private /run/hpcc.
    capf=$(ls /run/hpcc/task-env-$jobid.$stepid.* 2>/dev/null | head -1)
    if env | grep -q '^PMIX_SERVER_URI'; then
      log "--- pmix: per-task vars from the runtime's environment (SPANK setenv)"
      while IFS= read -r kv; do setenv "${kv%%=*}" "${kv#*=}"; done < <(env | grep -E '^PMIX_')
    elif [ -n "$capf" ]; then
      log "--- pmix: per-task vars from $capf"
      while IFS= read -r kv; do setenv "${kv%%=*}" "${kv#*=}"; done < <(grep -E '^(PMIX_|SLURM_PMIXP_)' "$capf")
    elif [ "$WRAP_PMIX_DERIVE" = 1 ]; then
      # No SPANK: derive them. The PMIx server is our parent slurmstepd; its
      # URI is pmix-server.<stepd pid>;tcp4://127.0.0.1:<port of its loopback listener>.
      # RunTimeRun runs as `sh -c "..."` in the forked task: walk up to slurmstepd.
      sp=$PPID ports= inos=" "
      while [ "$sp" -gt 1 ] && [ "$(cat /proc/$sp/comm)" != slurmstepd ]; do sp=$(awk '{print $4}' /proc/$sp/stat); done
      for f in /proc/$sp/fd/*; do l=$(readlink "$f"); case $l in socket:*) l=${l#socket:[}; inos+="${l%]} " ;; esac; done
      while read -r _ loc _ st _ _ _ _ _ ino _; do
        [ "$st" = 0A ] && [ "${loc%:*}" = 0100007F ] && [[ $inos == *" $ino "* ]] && ports+="$((16#${loc#*:})) "
      done < <(tail -n +2 /proc/net/tcp)
      port=${ports%% *}
      uri="pmix-server.$sp;tcp4://127.0.0.1:$port"
      tmpd=$PMIX_SERVER_TMPDIR   # in the runtime's own env (slurmstepd's)
      log "--- pmix: derived: stepd pid $sp, loopback listeners [$ports] -> $uri"
      for v in 2 3 4 21 41; do setenv PMIX_SERVER_URI$v "$uri"; done
      setenv PMIX_NAMESPACE "slurm.pmix.$jobid.$stepid"
      setenv PMIX_SERVER_TMPDIR "$tmpd"
      setenv PMIX_DSTORE_21_BASE_PATH "$tmpd/pmix_dstor_ds21_$sp"
      setenv PMIX_DSTORE_ESH_BASE_PATH "$tmpd/pmix_dstor_ds12_$sp"
      setenv PMIX_SECURITY_MODE munge,native
      setenv PMIX_GDS_MODULE ds21,ds12,hash
      setenv PMIX_BFROP_BUFFER_TYPE PMIX_BFROP_BUFFER_NON_DESC
      setenv PMIX_SYSTEM_TMPDIR /tmp
    else
      log "--- pmix: no per-task vars (no SPANK capture): only the rank (from $map: $rank)"
    fi
    setenv PMIX_RANK "$rank"
    spool=$(penv PMIX_SERVER_TMPDIR); [ -n "$spool" ] || spool=$(grep -m1 '^PMIX_SERVER_TMPDIR=' "$capf" 2>/dev/null | cut -d= -f2-)
    [ -n "$spool" ] && [ "$WRAP_PMIX_NOSPOOL" != 1 ] && bind_rw "$spool" "$spool"
    [ "$WRAP_PMIX_NOTMPFS" = 1 ] || for d in $(penv PMIX_SYSTEM_TMPDIR) $(penv TMPDIR) /tmp/hpcc-slurm2/tmp; do
      [ -d "$d" ] && [ "$d" != /tmp ] && bind_rw "$d" "$d"
    done
    nohostnet
    ;;
esac
[ "$WRAP_HOSTNET" = 1 ] && nohostnet
if [ "$WRAP_INJECT" != none ]; then
  inj=$REPO/tests/work/mpi/inject-$WRAP_INJECT.txt
  while read -r kind src dst; do
    case $kind in
      lib) bind "$src" "/opt/hpcc/lib/$dst" ;;
      dir) bind "$src" "$dst" ;;
    esac
  done <"$inj"
  setenv LD_LIBRARY_PATH /opt/hpcc/lib
fi
[ "$WRAP_CPUINFO" = 1 ] && bind /proc/cpuinfo /proc/cpuinfo
dump_cfg after
log "--- exec: runc ${runc_pre[*]} ${preserve[*]} ${runc_post[*]}  (wrapper took $(echo "$(date +%s.%N) - $t_start" | bc)s)"
exec 19>&-
exec runc "${runc_pre[@]}" "${preserve[@]}" "${runc_post[@]}"
