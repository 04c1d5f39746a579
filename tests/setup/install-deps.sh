#!/usr/bin/env bash
# Install the Debian 12 packages the hpcc end-to-end tests and CI need.
# Idempotent: does nothing when every package is already installed, runs
# `apt-get update` at most once per run (and only when the package lists are
# missing or a wanted package is unknown to apt-cache).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { printf '[install-deps] %s\n' "$*"; }

PKGS=(
  # OCI runtimes, engine and image tools
  runc crun podman umoci skopeo
  # engines of tests/tests/engines.rs (private daemons the test starts)
  docker.io containerd zstd
  # the real registry of tests/tests/registry.rs (htpasswd makes its bcrypt file;
  # curl pushes the NFD referrer, GNU time measures hpcc's peak memory)
  docker-registry apache2-utils curl time
  # rootfs material for the fixtures
  busybox-static
  # one-node Slurm 22.05 (slurm-wlm pulls slurmd/slurmctld, listed anyway)
  slurm-wlm slurmd slurmctld munge libslurm-dev
  # bindgen for the SPANK plugin
  libclang-dev clang
  # host MPI / fabric stacks the hook injects
  mpich libmpich-dev openmpi-bin libopenmpi-dev libfabric1 libfabric-bin libucx0
  # fixture build and test tooling
  jq gcc libc6-dev pkg-config file
  # the two-node Slurm rig of the MPI tests (ip netns, bridge, veth)
  iproute2
  # the Python bindings (python/): a venv for maturin and pytest
  # (tests/setup/python-test.sh), libpython for the workspace build
  python3 python3-venv python3-dev
)

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { log "not root and no sudo"; exit 1; }
  SUDO="sudo -E"
fi

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for p in "${PKGS[@]}"; do is_installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -eq 0 ]; then
  log "all ${#PKGS[@]} packages already installed, nothing to do"
  exit 0
fi
log "missing: ${missing[*]}"

updated=0
apt_update() {
  [ "$updated" -eq 1 ] && return 0
  log "apt-get update"
  $SUDO apt-get update -q
  updated=1
}

# A fresh container often has empty package lists: update before looking up.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  apt_update
fi

# Keep only names apt knows (a package renamed in a later Debian must not
# break the whole install); retry once after an update before dropping one.
known() { apt-cache show --no-all-versions "$1" >/dev/null 2>&1; }
want=()
for p in "${missing[@]}"; do
  if ! known "$p"; then apt_update; fi
  if known "$p"; then want+=("$p"); else log "WARNING: package '$p' not found, skipped"; fi
done
[ "${#want[@]}" -eq 0 ] && { log "nothing installable"; exit 0; }

log "apt-get install ${want[*]}"
if ! $SUDO apt-get install -y -q --no-install-recommends "${want[@]}"; then
  # Stale lists give 404s on a long-lived machine: refresh once and retry.
  apt_update
  $SUDO apt-get install -y -q --no-install-recommends "${want[@]}"
fi
log "done"
