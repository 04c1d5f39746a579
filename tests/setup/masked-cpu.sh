#!/usr/bin/env bash
# masked-cpu.sh TARGET COMMAND [ARGS...]
#
# Runs COMMAND as if this machine's CPU were archspec's TARGET
# (`x86_64_v2`: no AVX at all; `sapphirerapids`: AVX-512, AMX, ...): in a
# private mount namespace, /proc/cpuinfo is replaced by
# `masked-cpuinfo TARGET` (tests/src/bin/masked-cpuinfo.rs) and /run/hpcc
# by an empty tmpfs (the per-boot fingerprint cache of the real CPU must
# not answer). Everything COMMAND starts inherits the mask: hpcc-runtime,
# hooks run by runc, slurmd and the two-node rig. The instructions the
# CPU really has do not change: a test that executes code of TARGET can
# still die with SIGILL.
#
# Issue 17's proof: `bash tests/setup/masked-cpu.sh x86_64_v2 bash tests/run.sh`.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: masked-cpu.sh TARGET COMMAND [ARGS...]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "masked-cpu.sh: needs root (mount namespace)" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=$1; shift
fake=$(mktemp /tmp/hpcc-cpuinfo-"$target".XXXXXX)
(cd "$repo" && cargo run -q -p hpcc-e2e --bin masked-cpuinfo -- "$target") >"$fake"
echo "[masked-cpu] /proc/cpuinfo <- $target: $(grep -m1 '^flags' "$fake" | wc -w) flags" >&2
export HPCC_MASKED_CPU=$target
exec unshare -m --propagation private bash -c '
  set -e
  mount --bind "$1" /proc/cpuinfo
  mkdir -p /run/hpcc && mount -t tmpfs -o mode=0755 tmpfs /run/hpcc
  shift; exec "$@"' masked "$fake" "$@"
