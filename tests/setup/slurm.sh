#!/usr/bin/env bash
# slurm.sh start|stop|status
# A one-node Slurm 22.05 on localhost for the end-to-end tests (recipe from
# ENVIRONMENT.md): munged, slurmctld and slurmd as root, state under
# /tmp/slurm. Config files, all left alone while slurmctld is running:
#   /etc/slurm/slurm.conf   written (a foreign one is saved once as slurm.conf.hpcc-orig)
#   /etc/slurm/oci.conf     written when absent or written by tests/setup; a
#                           foreign one (e.g. a test's runtime wrapper) is kept,
#                           unless SLURM_OCI_RUNTIME is set (then it is replaced)
#   /etc/slurm/plugstack.conf  created empty only if absent (the SPANK tests own it)
# SLURM_OCI_RUNTIME=/path/to/wrapper: command used instead of `runc` in oci.conf
#   (the wrapper gets the runc arguments, e.g. --root=/run/slurm-oci run ID -b BUNDLE).
#   start   idempotent; waits (<= ${SLURM_WAIT:-60}s) until `srun -N1 true` works
#   stop    kills the daemons this setup runs (munged only if we started it),
#           removes leftover runc containers of --container steps, cleans /tmp/slurm
#   status  prints the daemons and sinfo; exit 0 when all are up
set -euo pipefail

ETC=/etc/slurm
CONF=$ETC/slurm.conf
OCI_CONF=$ETC/oci.conf
PLUGSTACK=$ETC/plugstack.conf
RUN=/tmp/slurm
OCI_ROOT=/run/slurm-oci
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
STARTED=/run/hpcc-slurm/started   # which daemons start launched (survives cleaning $RUN)
MARK="# written by hpcc tests/setup/slurm.sh"
MARK_ANY="# written by hpcc tests/setup"   # also slurm-onenode.sh's files

log() { printf '[slurm] %s\n' "$*"; }
die() { printf '[slurm] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ours() { head -1 "$1" | grep -q "^$MARK_ANY"; }

# Install FILE from stdin, keeping a copy of a file we did not write.
write_managed() {
  local f=$1 tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$f" ] && ! ours "$f" && [ ! -e "$f.hpcc-orig" ]; then
    log "saving existing $f as $f.hpcc-orig"; cp -p "$f" "$f.hpcc-orig"
  fi
  if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return; fi
  log "writing $f"; install -m 0644 "$tmp" "$f"; rm -f "$tmp"
}

write_configs() {
  mkdir -p "$ETC"
  local mem_kb real_mb cpus
  mem_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
  real_mb=$(( mem_kb * 8 / 10 / 1024 ))   # leave 20% so slurmd never reports less
  cpus=$(nproc)
  write_managed "$CONF" <<EOF2
$MARK
ClusterName=test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$RUN/state
SlurmdSpoolDir=$RUN/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
PlugStackConfig=$PLUGSTACK
NodeName=localhost CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF2
  # run (not create/start, which hung on 22.05); 22.05 rejects IgnoreFileConfigJson.
  if [ -f "$OCI_CONF" ] && ! ours "$OCI_CONF" && [ -z "${SLURM_OCI_RUNTIME:-}" ]; then
    log "keeping existing $OCI_CONF (not ours; set SLURM_OCI_RUNTIME to replace it)"
  else
    write_managed "$OCI_CONF" <<EOF2
$MARK
RunTimeQuery="runc --root=$OCI_ROOT state %n.%u.%j.%s.%t"
RunTimeKill="runc --root=$OCI_ROOT kill -a %n.%u.%j.%s.%t"
RunTimeDelete="runc --root=$OCI_ROOT delete --force %n.%u.%j.%s.%t"
RunTimeRun="exec ${SLURM_OCI_RUNTIME:-runc} --root=$OCI_ROOT run %n.%u.%j.%s.%t -b %b"
EOF2
  fi
  if [ ! -e "$PLUGSTACK" ]; then
    log "creating empty $PLUGSTACK"; : >"$PLUGSTACK"
  elif stale_plugstack; then
    # A run killed before it restored the file (another checkout, gone):
    # slurmd would refuse to start on the missing plugin.
    log "$PLUGSTACK names a plugin that does not exist: saved as $PLUGSTACK.stale, emptied"
    cp -p "$PLUGSTACK" "$PLUGSTACK.stale"; : >"$PLUGSTACK"
  else
    log "keeping existing $PLUGSTACK"
  fi
}

# Whether plugstack.conf has a required/optional line whose plugin file is
# missing.
stale_plugstack() {
  local kind path _
  while read -r kind path _; do
    case $kind in required|optional) [ -e "$path" ] || return 0 ;; esac
  done <"$PLUGSTACK"
  return 1
}

start_munge() {
  if munge_ok; then log "munged already running"; return; fi
  if [ ! -s "$MUNGE_KEY" ]; then
    log "creating $MUNGE_KEY (1024 random bytes)"
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge "$MUNGE_KEY"; chmod 700 /etc/munge; chmod 400 "$MUNGE_KEY"
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  # munged refuses group/world-writable dirs
  chmod 0755 /run/munge; chmod 0700 /var/lib/munge /var/log/munge
  log "starting munged"
  su -s /bin/sh munge -c /usr/sbin/munged
  echo munged >>"$STARTED"
  for _ in $(seq 50); do munge_ok && return; sleep 0.2; done
  die "munged did not come up"
}

node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -1; }

do_start() {
  command -v slurmctld >/dev/null || die "slurm not installed: run tests/setup/install-deps.sh"
  # Never rewrite configs under a running cluster (another test may own them).
  if alive "$RUN/slurmctld.pid"; then
    log "slurmctld already running: leaving $ETC as it is"
  else
    write_configs
  fi
  mkdir -p "$RUN/state" "$RUN/spool" "$RUN/log"
  mkdir -p "$(dirname "$STARTED")"; touch "$STARTED"
  start_munge
  if alive "$RUN/slurmctld.pid"; then log "slurmctld already running"
  else
    log "starting slurmctld (fresh state: -c)"
    slurmctld -c -f "$CONF"; echo slurmctld >>"$STARTED"
  fi
  if alive "$RUN/slurmd.pid"; then log "slurmd already running"
  else
    log "starting slurmd"
    slurmd -f "$CONF"; echo slurmd >>"$STARTED"
  fi
  local wait=${SLURM_WAIT:-60} t0=$SECONDS st
  log "waiting (<= ${wait}s) for srun -N1 true"
  while :; do
    if timeout 15 srun -N1 -t 1 true >/dev/null 2>&1; then
      log "ready after $((SECONDS - t0))s (node $(node_state))"; return 0
    fi
    # A daemon that died (bad config, port taken) will not come back: fail fast
    # (after a grace period: pid files appear only once the daemons are up).
    for d in slurmctld slurmd; do
      if [ $((SECONDS - t0)) -ge 5 ] && ! alive "$RUN/$d.pid"; then
        log "$d is not running; last log lines:"
        tail -n 5 "$RUN/log/$d.log" >&2 2>/dev/null || true
        exit 1
      fi
    done
    st=$(node_state || true)
    case $st in
      down*|drain*|fail*) log "node is $st: resuming"
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    if [ $((SECONDS - t0)) -ge "$wait" ]; then
      log "not ready after ${wait}s; node state: ${st:-?}"
      tail -n 5 "$RUN/log/slurmctld.log" "$RUN/log/slurmd.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 1
  done
}

stop_pidfile() {  # NAME PIDFILE
  local pid
  alive "$2" || { log "$1 not running"; return 0; }
  pid=$(cat "$2")
  log "stopping $1 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "$1 did not exit, SIGKILL"; kill -9 "$pid" 2>/dev/null || true
}

do_stop() {
  # Containers of --container steps that a killed step left behind.
  if command -v runc >/dev/null && [ -d "$OCI_ROOT" ]; then
    for c in $(runc --root="$OCI_ROOT" list -q 2>/dev/null); do
      log "deleting leftover container $c"; runc --root="$OCI_ROOT" delete --force "$c" || true
    done
  fi
  # slurmd/slurmctld are ours whenever they use our pid files.
  stop_pidfile slurmd "$RUN/slurmd.pid"
  stop_pidfile slurmctld "$RUN/slurmctld.pid"
  if [ -f "$STARTED" ] && grep -qx munged "$STARTED"; then
    stop_pidfile munged "$MUNGE_PID"
  else
    log "leaving munged alone (not started by this script)"
  fi
  rm -f "$STARTED"
  log "removing $RUN"
  # Contents first: $RUN may be a mount point (tests run this in a private ns).
  rm -rf "${RUN:?}"/* "${RUN:?}"/.[!.]* 2>/dev/null || true
  rmdir "$RUN" 2>/dev/null || true
}

do_status() {
  local rc=0 n f
  for n in munged slurmctld slurmd; do
    case $n in munged) f=$MUNGE_PID ;; *) f=$RUN/$n.pid ;; esac
    if alive "$f"; then log "$n running (pid $(cat "$f"))"; else log "$n NOT running"; rc=3; fi
  done
  if [ $rc -eq 0 ]; then sinfo || rc=3; fi
  return $rc
}

case ${1:-} in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
