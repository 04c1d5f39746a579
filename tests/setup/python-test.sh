#!/usr/bin/env bash
# The Python bindings end to end, from scratch: a fresh virtual environment,
# maturin, pytest and jsonschema at pinned versions from PyPI, the `hpcc`
# module built by maturin (dev profile: it reuses target/debug's compiled
# dependencies) and installed as a wheel, then python/tests, which validate
# every returned dict against docs/schema/ and compare it with what the
# `hpcc` binary prints.
#
#   bash tests/setup/python-test.sh [VENV]   (default target/python-venv)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
VENV=${1:-$repo/target/python-venv}
log() { printf '[python-test] %s\n' "$*"; }
t0=$SECONDS

# Pinned: a new maturin, pytest or jsonschema release must not change a run.
PIP_PKGS=(maturin==1.16.0 pytest==9.2.0 jsonschema==4.26.0)

rm -rf "$VENV"
log "python3 -m venv $VENV ($(python3 --version))"
python3 -m venv "$VENV"
timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PKGS[@]}"
t_pip=$((SECONDS - t0))

# The fixtures the tests read (each script skips what exists) and the
# CLI the results are compared with.
bash tests/setup/build-fixtures.sh tests/work >/dev/null
bash tests/setup/build-image-fixtures.sh tests/work/image-side >/dev/null
timeout 1800 cargo build -q -p hpcc-cli --bin hpcc

t1=$SECONDS
# --compatibility linux: a wheel for this machine (it links the system
# OpenSSL of the registry client; a manylinux wheel would bundle it, which
# needs patchelf).
log "maturin build (dev profile)"
rm -rf "$VENV/wheels"
(cd python && timeout 1800 "$VENV/bin/maturin" build --profile dev \
  --interpreter "$VENV/bin/python" --compatibility linux --out "$VENV/wheels" --quiet)
t_build=$((SECONDS - t1))
"$VENV/bin/pip" install -q --disable-pip-version-check "$VENV"/wheels/hpcc-*.whl

t2=$SECONDS
HPCC_REPO="$repo" HPCC_BIN="$repo/target/debug/hpcc" \
  timeout 600 "$VENV/bin/python" -m pytest -q -p no:cacheprovider python/tests
log "pip ${t_pip} s, maturin build ${t_build} s, pytest $((SECONDS - t2)) s, total $((SECONDS - t0)) s"
