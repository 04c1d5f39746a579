#!/usr/bin/env bash
# The test command of the README: installs what the suite needs (Debian 12,
# as root), checks formatting and lints, builds the fixtures from real Debian
# packages, and runs every test: unit tests and the end-to-end tests against
# real runc, crun, podman and Slurm, then the fuzz smoke and the packages.
#
# Every stage runs even when an earlier one failed (a failure in one suite
# must not hide the others: `cargo test --no-fail-fast`), and the run ends
# with one table of each stage's and each test binary's result. The exit
# status is non-zero when anything failed.
#
# HPCC_SKIP_PACKAGES=1 skips the package stage (it builds the release
# profile); the table says so.
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || { echo "tests/run.sh must run as root (runc, crun, Slurm)"; exit 1; }

# Installing is the one stage nothing else can do without.
step "installing Debian packages"
bash tests/setup/install-deps.sh || { echo "tests/run.sh: installing the packages failed"; exit 1; }

export CARGO_TERM_COLOR=never
LOGDIR=$(mktemp -d /tmp/hpcc-run.XXXXXX)
STAGES=()   # "name|result|seconds"
failed=0

# stage NAME COMMAND...: runs one stage in its own bash (so `set -e` holds
# inside it whatever the caller does) and records its result.
stage() {
  local name=$1; shift
  step "$name"
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  local r=pass
  if [ "$rc" -ne 0 ]; then r="FAIL (exit $rc)"; failed=1; fi
  STAGES+=("$name|$r|$((SECONDS - t0))")
}

sh_stage() { local name=$1; shift; stage "$name" bash -euo pipefail -c "$*"; }

sh_stage "cargo fmt --check" 'cargo fmt --all -- --check'
sh_stage "cargo clippy -D warnings" 'cargo clippy --workspace --all-targets -- -D warnings'

rm -rf tests/work/scratch   # per-test bundles of earlier runs
sh_stage "fixtures (busybox, MPICH/Open MPI stand-ins, OCI layouts)" 'bash tests/setup/build-fixtures.sh tests/work'

# The end-to-end tests start containers and a Slurm cluster; two threads
# match the two cores of CI. --no-fail-fast: every test binary runs.
sh_stage "cargo test --workspace --no-fail-fast" \
  "cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee $LOGDIR/cargo-test.log"

# The Python module (python/): a fresh venv, maturin (dev profile, on the
# artifacts cargo test just built), pytest against the CLI and docs/schema/.
sh_stage "python bindings (venv, maturin, pytest)" 'bash tests/setup/python-test.sh'

sh_stage "fuzz smoke (corpus replay, 4 s of mutation per target)" 'bash tests/setup/fuzz-smoke.sh 4'

# What an admin installs (tests/setup/package-test.sh): podman with the shipped
# hooks.d file, Slurm with the shipped snippets, every integration page's
# examples, hpcc doctor green, then removal leaves only the conffile.
if [ "${HPCC_SKIP_PACKAGES:-0}" = 1 ]; then
  STAGES+=("packages|skipped (HPCC_SKIP_PACKAGES=1)|0")
else
  sh_stage "packages (cargo deb/generate-rpm, dpkg -i, e2e on installed files, dpkg -r)" \
    'bash tests/setup/install-packaging-tools.sh && bash packaging/make-packages.sh && bash tests/setup/package-test.sh target/packages'
fi

# One row per test binary of `cargo test`: its name, passed, failed, or
# "no result" when it died without cargo's summary line (a crash, a kill).
suites() {
  awk '
    function flush() { if (name != "") { if (res == "") { res = "no result (crashed or killed)"; bad = 1 } printf "  %-52s %s\n", name, res } name = ""; res = "" }
    /^ *Running / {
      flush()
      src = $(NF-1); bin = $NF; gsub(/[()]/, "", bin); n = split(bin, parts, "/"); b = parts[n]; sub(/-[0-9a-f]+$/, "", b)
      name = ($2 == "unittests") ? b " (unit, " src ")" : b " (" src ")"
      next
    }
    /^ *Doc-tests / { flush(); name = $2 " (doc)"; next }
    /^test result: / {
      p = $0; sub(/.*test result: /, "", p)
      st = p; sub(/\..*/, "", st)
      rest = p; sub(/^[^.]*\. */, "", rest); sub(/; [0-9]+ measured.*/, "", rest)
      res = st ": " rest
      if (st != "ok") bad = 1
    }
    END { flush(); exit bad }
  ' "$1"
}

printf '\n==> summary\n'
printf '  %-72s %-28s %s\n' stage result seconds
for s in "${STAGES[@]}"; do
  IFS='|' read -r n r t <<<"$s"
  printf '  %-72s %-28s %s\n' "$n" "$r" "$t"
done
if [ -f "$LOGDIR/cargo-test.log" ]; then
  printf '\n  test binaries of cargo test:\n'
  suites "$LOGDIR/cargo-test.log" || failed=1
fi
if [ "$failed" -ne 0 ]; then
  printf '\ntests/run.sh: FAILED (see the table above; cargo test log: %s)\n' "$LOGDIR/cargo-test.log"
  exit 1
fi
printf '\ntests/run.sh: every stage passed\n'
