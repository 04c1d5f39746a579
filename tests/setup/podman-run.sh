#!/usr/bin/env bash
# podman-run.sh ROOTFS [KEY=VALUE ...] [-- CMD [ARGS...]]
# Runs CMD (default: /bin/sh -c 'echo hi') with podman on a rootfs directory,
# with the KEY=VALUE pairs as --annotation, using the command that works on
# these machines (ENVIRONMENT.md):
#   podman --runtime runc --cgroup-manager cgroupfs --hooks-dir DIR run --rm \
#     --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 --annotation K=V \
#     --rootfs ROOTFS CMD...
# (without the two --ulimit runc fails here: "rlimit type 7").
# Env:
#   HOOK=/abs/hpcc-hook  written to a private hooks.d file, run at prestart for
#                        any container with an org.supercontainers.* annotation
#   HPCC_CONFIG=/path    passed to the hook as --config=/path
#   PODMAN_RUNTIME=runc  OCI runtime for podman
#   ROOTFS_MODE=copy|ref copy (default): run on a throw-away copy, since podman
#                        writes etc/hosts, etc/resolv.conf, run/.containerenv
#                        into the rootfs; ref: use ROOTFS in place
#   PODMAN_ARGS="..."    extra `podman run` options (word-split)
# podman's exit status is passed through.
set -euo pipefail
log() { printf '[podman-run] %s\n' "$*" >&2; }
[ $# -ge 1 ] || { echo "usage: $0 ROOTFS [KEY=VALUE ...] [-- CMD [ARGS...]]" >&2; exit 2; }
rootfs=$(cd "$1" && pwd); shift
ann=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  case $1 in *=*) ann+=(--annotation "$1") ;; *) log "not KEY=VALUE: $1"; exit 2 ;; esac
  shift
done
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || set -- /bin/sh -c 'echo hi'

tmp=$(mktemp -d /tmp/hpcc-podman.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# A private hooks dir: never pick up hooks installed system-wide.
mkdir -p "$tmp/hooks.d"
if [ -n "${HOOK:-}" ]; then
  henv='["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]'
  hargs=$(jq -nc --arg p "$HOOK" '[$p]')
  [ -n "${HPCC_CONFIG:-}" ] && hargs=$(jq -c --arg c "--config=$HPCC_CONFIG" '. + [$c]' <<<"$hargs")
  jq -n --arg p "$HOOK" --argjson env "$henv" --argjson args "$hargs" '{
    version: "1.0.0",
    hook: {path: $p, args: $args, env: $env},
    when: {annotations: {"^org\\.supercontainers\\.": ".*"}},
    stages: ["prestart"]}' >"$tmp/hooks.d/hpcc.json"
  log "hook $HOOK (hooks.d: $tmp/hooks.d/hpcc.json)"
fi
if [ "${ROOTFS_MODE:-copy}" = copy ]; then
  cp -a "$rootfs" "$tmp/rootfs"; rootfs=$tmp/rootfs
fi

log "podman run --rootfs $rootfs ${ann[*]} $*"
rc=0
# shellcheck disable=SC2086
podman --runtime "${PODMAN_RUNTIME:-runc}" --cgroup-manager cgroupfs \
  --hooks-dir "$tmp/hooks.d" run --rm \
  --ulimit nofile=20000:20000 --ulimit nproc=1000:1000 \
  ${PODMAN_ARGS:-} "${ann[@]}" --rootfs "$rootfs" "$@" || rc=$?
exit "$rc"
