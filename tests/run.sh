#!/usr/bin/env bash
# The test command of the README: installs what the suite needs (Debian 12,
# as root), checks formatting and lints, builds the fixtures from real Debian
# packages, and runs every test: unit tests and the end-to-end tests against
# real runc, crun, podman and a one-node Slurm.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "tests/run.sh must run as root (runc, crun, Slurm)"; exit 1; }

step "installing Debian packages"
bash tests/setup/install-deps.sh

export CARGO_TERM_COLOR=never
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

rm -rf tests/work/scratch   # per-test bundles of earlier runs
step "building fixtures (busybox, MPICH/Open MPI stand-in images, OCI layout)"
bash tests/setup/build-fixtures.sh tests/work

step "cargo test --workspace"
# The end-to-end tests start containers and a Slurm cluster; two threads
# match the two cores of CI.
cargo test --workspace -- --test-threads=2

step "fuzz smoke: every fuzz target's corpus replayed, then 4 s of mutation each"
bash tests/setup/fuzz-smoke.sh 4
step "packages: cargo deb, cargo generate-rpm; dpkg -i, end to end against the installed files, dpkg -r"
# What an admin installs (tests/setup/package-test.sh): podman with the shipped
# hooks.d file, Slurm with the shipped snippets, every integration page's
# examples, hpcc doctor green, then removal leaves only the conffile.
# HPCC_SKIP_PACKAGES=1 skips this stage (it builds the release profile).
if [ "${HPCC_SKIP_PACKAGES:-0}" = 1 ]; then
  echo "skipped (HPCC_SKIP_PACKAGES=1)"
else
  t_pkg=$SECONDS
  bash tests/setup/install-packaging-tools.sh
  bash packaging/make-packages.sh
  bash tests/setup/package-test.sh target/packages
  echo "packaging stage: $((SECONDS - t_pkg)) s"
fi
