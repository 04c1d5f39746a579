#!/usr/bin/env bash
# packaging/make-packages.sh [--no-rpm] [--no-build] — the hpcc and hpcc-slurm
# packages, .deb (cargo deb) and .rpm (cargo generate-rpm), from the files
# packaging/build-release.sh stages. Output: target/packages/ (OUT=... to change).
# Needs cargo-deb and cargo-generate-rpm (tests/setup/install-packaging-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[make-packages] %s\n' "$*"; }
rpm=1 build=1
for a in "$@"; do
  case $a in
    --no-rpm) rpm=0 ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--no-rpm] [--no-build]" >&2; exit 2 ;;
  esac
done
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/packages}
[ "$build" = 1 ] && bash packaging/build-release.sh
STAGE=$TARGET/release/hpcc-package
[ -x "$STAGE/bin/hpcc" ] || { log "nothing staged in $STAGE: run packaging/build-release.sh"; exit 1; }
slurm=$(cat "$STAGE/slurm-release")
rm -rf "$OUT"; mkdir -p "$OUT"
t0=$SECONDS
# The staged binaries are stripped already; --no-build: package what was staged.
cargo deb --no-build --no-strip -q -p hpcc-cli -o "$OUT/"
[ -n "$slurm" ] && cargo deb --no-build --no-strip -q -p hpcc-spank -o "$OUT/"
if [ "$rpm" = 1 ]; then
  cargo generate-rpm -p cli -o "$OUT/"
  [ -n "$slurm" ] && cargo generate-rpm -p spank -o "$OUT/"
fi
log "packaged in $((SECONDS - t0)) s:"
ls -l "$OUT"
