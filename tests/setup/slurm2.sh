#!/usr/bin/env bash
# slurm2.sh start|stop|status|env
#
# A two-node Slurm 22.05 cluster on this one machine, for the MPI-in-container
# experiments and tests (recipe: shared/ENVIRONMENT.md "Slurm with two nodes").
# It never touches the one-node rig of slurm.sh (/etc/slurm, ports 6817/6818,
# /tmp/slurm, /run/slurm-oci):
#   config      $SLURM2_DIR/etc/{slurm.conf,oci.conf,plugstack.conf}
#               (use it with: eval "$(tests/setup/slurm2.sh env)", i.e. SLURM_CONF=...)
#   ports       SlurmctldPort=6917, SlurmdPort=6918
#   network     bridge hpccbr0 10.77.0.1/24 (slurmctld, srun), netns hn1/hn2 with
#               10.77.0.11 (node n1) and 10.77.0.12 (node n2)
#   mounts      each slurmd runs in its own network AND mount namespace, where it
#               has private tmpfs at /run/hpcc and at $SLURM2_DIR/tmp (= TmpFS)
#   runc state  --root=/run/hpcc-slurm2-oci (oci.conf), removed by stop
#   lock        holds flock /tmp/hpcc-e2e.lock while up (a holder process that
#               gives it up after SLURM2_LOCK_MAX seconds at most, or on stop)
#
# Knobs (read by start; a change restarts the daemons of the running rig):
#   SLURM2_DIR=/tmp/hpcc-slurm2     everything lives under it (removed by stop)
#   SLURM2_OCI_RUNTIME=runc         command that oci.conf RunTimeRun runs; gets
#                                   "--root=/run/hpcc-slurm2-oci run %n.%u.%j.%s.%t -b %b"
#                                   (may itself contain Slurm % patterns, e.g.
#                                   "/path/wrapper --hpcc-node=%n")
#   SLURM2_OCI_KILL_SIGNAL=KILL     signal argument of RunTimeKill (default: none, i.e.
#                                   runc's SIGTERM, which a container's pid 1 may ignore)
#   SLURM2_PLUGSTACK=FILE           PlugStackConfig (default: an empty $SLURM2_DIR/etc/plugstack.conf)
#   SLURM2_N2_CPUINFO=FILE          bound over /proc/cpuinfo in n2's mount namespace only
#   SLURM2_N1_CPUINFO=FILE          same for n1
#   SLURM2_DEBUG=info               SlurmdDebug / SlurmctldDebug
#   SLURM2_EXTRA_CONF='K=V\nK=V'    extra slurm.conf lines (e.g. KillOnBadExit=1)
#   SLURM2_CLI_FILTER=FILE          installed as cli_filter.lua next to slurm.conf, with
#                                   CliFilterPlugins=cli_filter/lua (the submit filter)
#   SLURM2_WAIT=60                  bound on the wait for `srun -N2 hostname`
#   SLURM2_NOLOCK=1                 do not take the lock (the caller holds it)
#   SLURM2_LOCK_WAIT=300            bound on the wait for the lock
#   SLURM2_LOCK_MAX=900             the lock is given up after this many seconds
#   SLURM2_KEEP_LOGS=DIR            stop copies the logs to DIR first
#   SLURM2_DOCS=BIN                 "docs" mode: oci.conf is packaging/slurm/oci.conf as an admin
#                                   copies it (docs/slurm.md), with only the runtime's installed
#                                   path /usr/libexec/hpcc/hpcc-runtime replaced by BIN (the built
#                                   hpcc-runtime); SLURM2_OCI_RUNTIME and SLURM2_OCI_KILL_SIGNAL
#                                   are not used. No --hpcc-config: the runtime decides under the
#                                   policy the plugin left for the step (SLURM2_PLUGSTACK must load it).
#   SLURM2_ROOTLESS=1               with SLURM2_DOCS: the rootless runc options of docs/slurm.md
#                                   (--rootless=true --root=/run/user-oci/%u) on every oci.conf line,
#                                   and /run/user-oci/USER made for root and SLURM2_USERS (owned, 0700;
#                                   left by stop: the one-node rig of tests/tests/slurm.rs uses them too)
#   SLURM2_USERS="hpcctest"         users given a /run/user-oci directory (SLURM2_ROOTLESS=1)
set -euo pipefail
export LC_ALL=C

DIR=${SLURM2_DIR:-/tmp/hpcc-slurm2}
ETC=$DIR/etc
CONF=$ETC/slurm.conf
OCI_ROOT=/run/hpcc-slurm2-oci
# Docs mode keeps the runc roots of packaging/slurm/oci.conf (shared with
# the one-node rig): only containers of n1/n2 are ever deleted there.
DOCS_OCI_ROOT=/run/slurm-oci USER_OCI_ROOT=/run/user-oci
BR=hpccbr0 NET=10.77.0 NODES="1 2"
CTLD_PORT=6917 SLURMD_PORT=6918
LOCK=/tmp/hpcc-e2e.lock
MUNGE_KEY=/etc/munge/munge.key MUNGE_PID=/run/munge/munged.pid

log() { printf '[slurm2] %s\n' "$*" >&2; }
die() { printf '[slurm2] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
export SLURM_CONF=$CONF

# ---------------------------------------------------------------- lock ------
# The rig's paths are fixed and shared by every checkout on this machine: a
# live holder is ours only when it was taken from this checkout (lock.owner);
# another checkout's rig is waited for, never restarted or stopped from here.
OWNER=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ours() { alive "$DIR/lock.pid" && [ "$(cat "$DIR/lock.owner" 2>/dev/null)" = "$OWNER" ]; }
take_lock() {
  if [ "${SLURM2_NOLOCK:-}" = 1 ]; then log "SLURM2_NOLOCK=1: not taking $LOCK"; return; fi
  if ours; then return; fi
  local w=${SLURM2_LOCK_WAIT:-300} max=${SLURM2_LOCK_MAX:-900} ok=/tmp/hpcc-slurm2-lock.$$ holder
  rm -f "$ok"
  log "taking $LOCK (wait <= ${w}s, held <= ${max}s)"
  # The holder keeps fd 9 (the lock) open in `sleep`; stop kills it by pid.
  # It writes lock.pid and lock.owner only once it holds the lock: until
  # then they are the previous holder's (whose stop removes $DIR).
  ( exec 9>>"$LOCK"
    flock -w "$w" 9 || exit 1
    mkdir -p "$DIR"; echo "$BASHPID" >"$DIR/lock.pid"; echo "$OWNER" >"$DIR/lock.owner"
    : >"$ok"
    exec sleep "$max" ) </dev/null >/dev/null 2>&1 &
  holder=$!
  local t0=$SECONDS
  until [ -e "$ok" ]; do
    kill -0 "$holder" 2>/dev/null || die "could not take $LOCK within ${w}s"
    [ $((SECONDS - t0)) -le $((w + 5)) ] || die "lock holder hangs"
    sleep 0.2
  done
  rm -f "$ok"
}

# --------------------------------------------------------------- munge ------
start_munge() {
  if munge_ok; then return; fi
  if [ ! -s "$MUNGE_KEY" ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge "$MUNGE_KEY"; chmod 700 /etc/munge; chmod 400 "$MUNGE_KEY"
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge; chmod 0700 /var/lib/munge /var/log/munge
  log "starting munged"
  su -s /bin/sh munge -c /usr/sbin/munged
  echo munged >>"$DIR/started"
  for _ in $(seq 50); do munge_ok && return; sleep 0.2; done
  die "munged did not come up"
}

# ------------------------------------------------------------- network ------
net_up() {
  if ! ip link show "$BR" >/dev/null 2>&1; then
    log "creating bridge $BR $NET.1/24"
    ip link add "$BR" type bridge
    ip addr add "$NET.1/24" dev "$BR"
  fi
  ip link set "$BR" up
  local i
  for i in $NODES; do
    # A name left by a rig whose netns mount lived in another mount
    # namespace (tests/setup/masked-cpu.sh runs the rig under unshare -m):
    # an empty file here, which nsenter cannot enter. We hold the lock.
    if [ -e "/run/netns/hn$i" ] && ! nsenter --net="/run/netns/hn$i" true 2>/dev/null; then
      log "removing stale netns name hn$i"
      ip netns del "hn$i" 2>/dev/null || rm -f "/run/netns/hn$i"
      ip link del "hpccveth$i" 2>/dev/null || true
    fi
    if [ ! -e "/run/netns/hn$i" ]; then
      log "creating netns hn$i ($NET.1$i)"
      ip netns add "hn$i"
      ip link add "hpccveth$i" type veth peer name eth0 netns "hn$i"
      ip link set "hpccveth$i" master "$BR" up
      ip -n "hn$i" addr add "$NET.1$i/24" dev eth0
      ip -n "hn$i" link set eth0 up
      ip -n "hn$i" link set lo up
    fi
  done
}
net_down() {
  local i
  for i in $NODES; do
    ip link del "hpccveth$i" 2>/dev/null || true
    if [ -e "/run/netns/hn$i" ]; then log "removing netns hn$i"; ip netns del "hn$i" || true; fi
  done
  if ip link show "$BR" >/dev/null 2>&1; then log "removing bridge $BR"; ip link del "$BR" || true; fi
}

# -------------------------------------------------------------- config ------
# Everything that start depends on; a change restarts the daemons.
params() {
  printf 'killsig=%s\n' "${SLURM2_OCI_KILL_SIGNAL:-}"
  printf 'docs=%s\nrootless=%s\nusers=%s\n' "${SLURM2_DOCS:-}" "${SLURM2_ROOTLESS:-}" "${SLURM2_USERS:-hpcctest}"
  printf 'runtime=%s\nplugstack=%s\nn1cpu=%s\nn2cpu=%s\ndebug=%s\nextra=%s\n' \
    "${SLURM2_OCI_RUNTIME:-runc}" "${SLURM2_PLUGSTACK:-$ETC/plugstack.conf}" \
    "${SLURM2_N1_CPUINFO:-}" "${SLURM2_N2_CPUINFO:-}" "${SLURM2_DEBUG:-info}" \
    "${SLURM2_EXTRA_CONF:-}"
  printf 'clifilter=%s\n' "${SLURM2_CLI_FILTER:-}"
  [ -z "${SLURM2_CLI_FILTER:-}" ] || sha256sum "$SLURM2_CLI_FILTER"
}
write_configs() {
  mkdir -p "$ETC"
  local rt=${SLURM2_OCI_RUNTIME:-runc} ps=${SLURM2_PLUGSTACK:-$ETC/plugstack.conf}
  local dbg=${SLURM2_DEBUG:-info} host; host=$(hostname -s)
  # Both nodes share this machine's CPUs: each declares what is there, at
  # most 2 (a node declaring more CPUs than slurmd finds is drained).
  local cpus; cpus=$(nproc); [ "$cpus" -le 2 ] || cpus=2
  [ -e "$ETC/plugstack.conf" ] || : >"$ETC/plugstack.conf"
  [ -f "$ps" ] || die "SLURM2_PLUGSTACK=$ps: no such file"
  rm -f "$ETC/cli_filter.lua"
  if [ -n "${SLURM2_CLI_FILTER:-}" ]; then
    [ -f "$SLURM2_CLI_FILTER" ] || die "SLURM2_CLI_FILTER=$SLURM2_CLI_FILTER: no such file"
    install -m 0644 "$SLURM2_CLI_FILTER" "$ETC/cli_filter.lua"
  fi
  cat >"$CONF" <<EOF
# written by hpcc tests/setup/slurm2.sh
ClusterName=hpcc2
SlurmctldHost=$host($NET.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=$dbg
SlurmdDebug=$dbg
TmpFS=$DIR/tmp
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PlugStackConfig=$ps
MessageTimeout=10
${SLURM2_CLI_FILTER:+CliFilterPlugins=cli_filter/lua}
$(printf '%b' "${SLURM2_EXTRA_CONF:-}")
NodeName=n1 NodeAddr=$NET.11 CPUs=$cpus RealMemory=2000 State=UNKNOWN
NodeName=n2 NodeAddr=$NET.12 CPUs=$cpus RealMemory=2000 State=UNKNOWN
PartitionName=all Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -n "${SLURM2_DOCS:-}" ]; then
    write_docs_oci_conf
  else
    cat >"$ETC/oci.conf" <<EOF
# written by hpcc tests/setup/slurm2.sh
RunTimeQuery="runc --root=$OCI_ROOT state %n.%u.%j.%s.%t"
RunTimeKill="runc --root=$OCI_ROOT kill -a %n.%u.%j.%s.%t${SLURM2_OCI_KILL_SIGNAL:+ $SLURM2_OCI_KILL_SIGNAL}"
RunTimeDelete="runc --root=$OCI_ROOT delete --force %n.%u.%j.%s.%t"
RunTimeRun="exec $rt --root=$OCI_ROOT run %n.%u.%j.%s.%t -b %b"
EOF
  fi
  params >"$DIR/params"
}

# The shipped oci.conf, as docs/slurm.md tells an admin to install it: only
# the installed runtime path differs (this rig runs the build), and, for
# rootless runc, the options docs/slurm.md says to put on every line.
write_docs_oci_conf() {
  local src here bin=$SLURM2_DOCS u uid
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  src=$here/../../packaging/slurm/oci.conf
  [ -x "$bin" ] || die "SLURM2_DOCS=$bin: not an executable"
  grep -q '/usr/libexec/hpcc/hpcc-runtime' "$src" || die "$src no longer names /usr/libexec/hpcc/hpcc-runtime"
  { echo "# packaging/slurm/oci.conf, copied by hpcc tests/setup/slurm2.sh (docs mode)"
    if [ "${SLURM2_ROOTLESS:-}" = 1 ]; then
      sed -e "s#/usr/libexec/hpcc/hpcc-runtime#$bin#" \
          -e "s#--root=$DOCS_OCI_ROOT#--rootless=true --root=$USER_OCI_ROOT/%u#" "$src"
    else
      sed -e "s#/usr/libexec/hpcc/hpcc-runtime#$bin#" "$src"
    fi; } >"$ETC/oci.conf"
  if [ "${SLURM2_ROOTLESS:-}" = 1 ]; then
    if grep -q -- "--root=$DOCS_OCI_ROOT" "$ETC/oci.conf"; then die "oci.conf: a line kept --root=$DOCS_OCI_ROOT"; fi
    # docs/slurm.md: the state directory exists and belongs to the user.
    for u in root ${SLURM2_USERS:-hpcctest}; do
      uid=$(id -u "$u") || die "no user $u"
      mkdir -p "$USER_OCI_ROOT/$u"; chown "$uid:$(id -g "$u")" "$USER_OCI_ROOT/$u"; chmod 0700 "$USER_OCI_ROOT/$u"
    done
  fi
}

# Every runc root that may hold this rig's containers.
oci_roots() {
  if [ -z "${SLURM2_DOCS:-}" ] && ! grep -qs '^docs=.' "$DIR/params"; then echo "$OCI_ROOT"; return 0; fi
  echo "$DOCS_OCI_ROOT"
  local d
  for d in "$USER_OCI_ROOT"/*/; do [ -d "$d" ] && echo "${d%/}"; done
  return 0
}

# --------------------------------------------------------------- nodes ------
# slurmd of node n$1 in netns hn$1 and a new private mount namespace with
# its own tmpfs at /run/hpcc and $DIR/tmp, and optionally a /proc/cpuinfo.
# A clean environment (as under systemd): what the OCI runtime inherits from
# slurmd is then what a production node gives it.
start_node() {
  local i=$1 cpu var
  var=SLURM2_N${i}_CPUINFO; cpu=${!var:-}
  [ -z "$cpu" ] || [ -f "$cpu" ] || die "$var=$cpu: no such file"
  [ -d /run/hpcc ] || { mkdir -p /run/hpcc; echo runhpcc >>"$DIR/started"; }
  mkdir -p "$DIR/spool/n$i" "$DIR/tmp"
  log "starting slurmd n$i (netns hn$i, own mount ns${cpu:+, /proc/cpuinfo <- $cpu})"
  nsenter --net="/run/netns/hn$i" unshare --mount --propagation private \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CPU="$cpu" DIR="$DIR" N="n$i" CONF="$CONF" sh -ec '
      mount -t tmpfs -o mode=0755,size=64m "hpcc-run-$N" /run/hpcc
      mount -t tmpfs -o mode=1777,size=512m "hpcc-tmp-$N" "$DIR/tmp"
      [ -z "$CPU" ] || mount --bind "$CPU" /proc/cpuinfo
      readlink /proc/self/ns/mnt >"$DIR/mntns-$N"
      exec env -u CPU -u DIR -u N -u CONF slurmd -f "$CONF" -N "$N"' </dev/null
}

# Pids whose mount namespace is node n$1's (slurmd, slurmstepd, runtimes, tasks).
node_pids() {
  local ns p; ns=$(cat "$DIR/mntns-n$1" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] && echo "${p#/proc/}"
  done
  return 0
}

wait_ready() {
  local wait=${SLURM2_WAIT:-60} t0=$SECONDS st
  log "waiting (<= ${wait}s) for srun -N2 hostname"
  while :; do
    if out=$(timeout 20 srun -N2 -t 1 hostname 2>&1) && [ "$(wc -l <<<"$out")" -eq 2 ]; then
      log "ready after $((SECONDS - t0))s"; return 0
    fi
    if [ $((SECONDS - t0)) -ge 5 ]; then
      alive "$DIR/slurmctld.pid" || { tail -n 5 "$DIR/log/slurmctld.log" >&2; die "slurmctld died"; }
      for i in $NODES; do
        alive "$DIR/slurmd-n$i.pid" || { tail -n 5 "$DIR/log/slurmd-n$i.log" >&2; die "slurmd n$i died"; }
      done
    fi
    st=$(sinfo -h -o '%N %T' 2>/dev/null | tr '\n' ' ' || true)
    case $st in *down*|*drain*|*fail*)
      scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true ;; esac
    if [ $((SECONDS - t0)) -ge "$wait" ]; then
      log "not ready after ${wait}s: $st; last srun: $out"
      tail -n 5 "$DIR/log/slurmctld.log" "$DIR"/log/slurmd-n*.log >&2 || true
      exit 1
    fi
    sleep 1
  done
}

stop_pid() {  # NAME PID
  kill "$2" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
  log "$1 ($2) did not exit: SIGKILL"; kill -9 "$2" 2>/dev/null || true
}

stop_daemons() {
  local i p
  local root c
  for root in $(oci_roots); do
    [ -d "$root" ] || continue
    for c in $(runc --root="$root" list -q 2>/dev/null); do
      # Shared roots (docs mode): only this rig's nodes' containers.
      case $c in n1.*|n2.*) ;; *) [ "$root" = "$OCI_ROOT" ] || continue ;; esac
      log "deleting container $c"; timeout 20 runc --root="$root" delete --force "$c" || true
    done
  done
  for i in $NODES; do
    alive "$DIR/slurmd-n$i.pid" && { log "stopping slurmd n$i"; stop_pid slurmd "$(cat "$DIR/slurmd-n$i.pid")"; }
    # Steps, runtimes and tasks left in the node's mount namespace.
    for p in $(node_pids "$i"); do log "killing pid $p ($(cat /proc/$p/comm 2>/dev/null)) of n$i"; kill -9 "$p" 2>/dev/null || true; done
    rm -f "$DIR/mntns-n$i"
  done
  alive "$DIR/slurmctld.pid" && { log "stopping slurmctld"; stop_pid slurmctld "$(cat "$DIR/slurmctld.pid")"; }
}

do_start() {
  command -v slurmctld >/dev/null || die "slurm not installed"
  take_lock
  # After the lock: the previous holder's stop removes $DIR.
  mkdir -p "$DIR/state" "$DIR/log" "$DIR/spool"
  touch "$DIR/started"
  local running=0
  alive "$DIR/slurmctld.pid" && running=1
  if [ $running = 1 ] && ! params | cmp -s - "$DIR/params"; then
    log "parameters changed: restarting the daemons"
    stop_daemons; running=0
  fi
  [ $running = 1 ] || write_configs
  start_munge
  net_up
  if alive "$DIR/slurmctld.pid"; then log "slurmctld running"
  else log "starting slurmctld"; slurmctld -c -f "$CONF"; fi
  for i in $NODES; do
    alive "$DIR/slurmd-n$i.pid" && [ -e "$DIR/mntns-n$i" ] || start_node "$i"
  done
  wait_ready
  log "use: export SLURM_CONF=$CONF"
}

do_stop() {
  if [ "${SLURM2_NOLOCK:-}" != 1 ] && alive "$DIR/lock.pid" && ! ours; then
    die "the rig is held by $(cat "$DIR/lock.owner" 2>/dev/null || echo 'another checkout') (lock holder pid $(cat "$DIR/lock.pid")): not stopping it"
  fi
  stop_daemons
  net_down
  if [ -f "$DIR/started" ] && grep -qx munged "$DIR/started" && alive "$MUNGE_PID"; then
    log "stopping munged (started by us)"; stop_pid munged "$(cat "$MUNGE_PID")"
  fi
  if [ -n "${SLURM2_KEEP_LOGS:-}" ] && [ -d "$DIR/log" ]; then
    mkdir -p "$SLURM2_KEEP_LOGS"; cp -a "$DIR/log/." "$SLURM2_KEEP_LOGS/"
    log "logs copied to $SLURM2_KEEP_LOGS"
  fi
  rm -rf "$OCI_ROOT"
  # /run/hpcc on the host: only if we created it, and only if empty (the nodes had their own tmpfs there).
  if [ -f "$DIR/started" ] && grep -qx runhpcc "$DIR/started"; then rmdir /run/hpcc 2>/dev/null || true; fi
  # $DIR goes before the lock: a checkout waiting for the lock makes $DIR
  # again as soon as it holds it (seen: its start then failed on a $DIR
  # this stop removed under it).
  local holder=
  ours && holder=$(cat "$DIR/lock.pid")
  if [ -d "$DIR" ]; then log "removing $DIR"; rm -rf "${DIR:?}"; fi
  if [ -n "$holder" ]; then
    log "releasing $LOCK (holder pid $holder)"; kill "$holder" 2>/dev/null || true
  fi
}

do_status() {
  local rc=0 i
  alive "$DIR/lock.pid" && log "lock held (pid $(cat "$DIR/lock.pid"))" || log "lock not held by us"
  alive "$DIR/slurmctld.pid" && log "slurmctld running" || { log "slurmctld NOT running"; rc=3; }
  for i in $NODES; do
    if alive "$DIR/slurmd-n$i.pid"; then log "slurmd n$i running (mnt ns $(cat "$DIR/mntns-n$i" 2>/dev/null))"
    else log "slurmd n$i NOT running"; rc=3; fi
  done
  [ $rc -ne 0 ] || timeout 10 sinfo -N -o '%N %T %C' || rc=3
  return $rc
}

case ${1:-} in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
