#!/usr/bin/env bash
# crun-run.sh ID BUNDLE [extra crun run args...]
# Runs `crun run` on a bundle the way that works on these machines
# (ENVIRONMENT.md): crun 1.8.1 refuses the hybrid cgroup v1 layout, so we
# remount cgroup2 on /sys/fs/cgroup inside a private mount namespace (the host
# is untouched) and tell crun not to manage cgroups. crun's exit status is
# passed through (hook failures: crun prints only "error executing hook ...").
# Extra env: CRUN_GLOBAL_ARGS="--root=/run/xyz --log=..." (before `run`).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 ID BUNDLE [crun run args...]" >&2; exit 2; }
id=$1 bundle=$2
shift 2
case $bundle in /*) ;; *) bundle=$PWD/$bundle ;; esac
[ -f "$bundle/config.json" ] || { echo "[crun-run] no $bundle/config.json" >&2; exit 2; }
command -v crun >/dev/null || { echo "[crun-run] crun missing" >&2; exit 2; }

# A container left by an interrupted run would make `crun run` fail: drop it.
# shellcheck disable=SC2086
crun ${CRUN_GLOBAL_ARGS:-} delete --force "$id" >/dev/null 2>&1 || true

echo "[crun-run] crun run $id (bundle $bundle) in a private mount ns with cgroup2" >&2
# Positional parameters carry the values into sh -c, so no quoting games.
# shellcheck disable=SC2016
exec unshare -m --propagation private sh -c '
  if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    umount -R /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
  fi
  id=$1 bundle=$2 global=$3; shift 3
  exec crun $global --cgroup-manager=disabled run --bundle "$bundle" "$@" "$id"
' crun-run "$id" "$bundle" "${CRUN_GLOBAL_ARGS:-}" "$@"
