#!/usr/bin/env bash
# fuzz-smoke.sh [SECONDS]   (default: 4 seconds per target)
#
# CI's bounded fuzz run of hpcc's parsers of image and engine input
# (fuzz/fuzz_targets/: annotations, policy, ldcache, elf, cdi, oci_state):
# every input of the committed corpus (fuzz/corpus/TARGET) is replayed and
# must pass, then libFuzzer mutates for SECONDS per target. A crash, a
# panic, an input slower than 5 s or a run over 1 GiB fails the script and
# leaves the input in fuzz/artifacts/.
#
# Stable Rust and plain cargo: the targets are built with libFuzzer's
# coverage instrumentation (no sanitizer: the code is safe Rust, what is
# looked for is panics, hangs and memory bombs), in the `smoke` profile
# (dependencies unoptimised) so that a build from scratch takes about a
# minute and a half on two cores. New inputs go to a scratch directory,
# never into the committed corpus. Longer runs: fuzz/README.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
SECS=${1:-4}
TARGETS=(annotations policy ldcache elf cdi oci_state)
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
log() { printf '[fuzz-smoke] %s\n' "$*"; }

cd "$repo/fuzz"
t0=$(date +%s)
# --target: the instrumentation flags then skip build scripts and proc
# macros (they would not link).
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
  cargo build -q --locked --profile smoke --target "$TRIPLE" --bins
log "built in $(( $(date +%s) - t0 ))s"

mkdir -p artifacts
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${TARGETS[@]}"; do
  bin=target/$TRIPLE/smoke/$t
  mkdir -p "$scratch/$t"
  opts=(-timeout=5 -rss_limit_mb=1024 -max_len=65536 -artifact_prefix="artifacts/$t-" -print_final_stats=1)
  # libFuzzer runs every corpus input first (INITED), then mutates.
  if ! out=$("$bin" "${opts[@]}" -max_total_time="$SECS" "$scratch/$t" "corpus/$t" 2>&1); then
    printf '%s\n' "$out" | tail -30
    log "FAILED: $t (input in fuzz/artifacts/)"; exit 1
  fi
  runs=$(printf '%s\n' "$out" | sed -n 's/.*stat::number_of_executed_units: *//p' | tail -1)
  log "$t: corpus of $(ls "corpus/$t" | wc -l) replayed, ${runs:-?} runs in ${SECS}s, no failure"
done
log "done in $(( $(date +%s) - t0 ))s"
