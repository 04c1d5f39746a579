#!/usr/bin/env bash
# packaging/build-release.sh — builds EVERY file the hpcc packages ship, in one
# place, and stages it under target/release/hpcc-package/ (STAGE below). The
# package metadata (cli/Cargo.toml: hpcc; spank/Cargo.toml: hpcc-slurm; for both
# cargo-deb and cargo-generate-rpm) takes its assets only from there, so what is
# packaged is exactly what this script built:
#
#   bin/hpcc                 the CLI                          (release profile)
#   libexec/hpcc-hook        the OCI hook                     (release profile, static; see STATIC HOOK)
#   libexec/hpcc-runtime     the OCI runtime shim for Slurm   (release profile, static, as the hook)
#   lib/hpcc_spank.so        the SPANK plugin                 (only with Slurm headers)
#   man/man{1,5,8}/*.gz      man pages, from the clap commands (hpcc generate-docs)
#   completions/             bash, zsh, fish
#   etc/hook.toml            config/hook.toml (the conffile)
#   hooks.d/hpcc.json        packaging/hooks.d/hpcc.json
#   examples/                plugstack.conf, oci.conf (packaging/slurm/), hook-entry.json;
#                            examples/rpm/: the Slurm snippets with RPM systems' paths
#   slurm-release            the Slurm release the plugin was built for ("" = none)
#
# Usage: packaging/build-release.sh [--no-slurm]
#   then: cargo deb --no-build -p hpcc-cli       (hpcc_*.deb)
#         cargo deb --no-build -p hpcc-spank     (hpcc-slurm_*.deb)
#         cargo generate-rpm -p cli; cargo generate-rpm -p spank
#   or all at once: packaging/make-packages.sh
# Env: SLURM_INCLUDE_DIR (as spank/build.rs), CARGO_TARGET_DIR, SOURCE_DATE_EPOCH.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[build-release] %s\n' "$*"; }

with_slurm=1
[ "${1:-}" = --no-slurm ] && with_slurm=0
TARGET=${CARGO_TARGET_DIR:-target}
STAGE=$TARGET/release/hpcc-package
SLURM_HEADER=${SLURM_INCLUDE_DIR:-/usr/include}/slurm/slurm_version.h
if [ "$with_slurm" = 1 ] && [ ! -f "$SLURM_HEADER" ]; then
  log "no $SLURM_HEADER: building without the SPANK plugin (install libslurm-dev for hpcc-slurm)"
  with_slurm=0
fi
# Reproducible man page dates and archive times: the last commit's time.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
  export SOURCE_DATE_EPOCH
fi

t0=$SECONDS
crates=(-p hpcc-cli)
[ "$with_slurm" = 1 ] && crates+=(-p hpcc-spank)
log "cargo build --release --locked ${crates[*]}"
nice -n "${HPCC_NICE:-10}" cargo build --release --locked "${crates[@]}"

# ==== STATIC HOOK ==============================================================
# hpcc-hook ships statically linked: an image's LD_PRELOAD/LD_AUDIT (runc gives a
# createContainer hook the container's env) must never reach a dynamic loader in
# it. packaging/build-static-hook.sh builds it (the only build of hpcc-hook:
# `cargo build` above gives none, its [[bin]] needs the feature static-hook) (crt-static, own --target dir)
# and proves it static (no PT_INTERP, file, ldd, no NVML, no NSS lookups). The
# deb's Depends: $auto then drops libc for it; /usr/bin/hpcc stays dynamic (it is
# the hook's GPU helper, `hpcc fingerprint --gpus`, with NVML).
# hpcc-runtime is built the same way (WITH_RUNTIME=1): it stands in front of
# every container start, and static it pays no dynamic loader there; its GPU
# helper is /usr/bin/hpcc too.
log "static hpcc-hook and hpcc-runtime (packaging/build-static-hook.sh)"
WITH_RUNTIME=1 PROFILE=release nice -n "${HPCC_NICE:-10}" bash packaging/build-static-hook.sh "$TARGET/static" >/dev/null
HOOK_BIN=$TARGET/static/hpcc-hook
RUNTIME_BIN=$TARGET/static/hpcc-runtime
# ==============================================================================

rm -rf "$STAGE"
mkdir -p "$STAGE"/{bin,libexec,lib,etc,hooks.d,examples}
install -m 0755 "$TARGET/release/hpcc" "$STAGE/bin/hpcc"
install -m 0755 "$HOOK_BIN" "$STAGE/libexec/hpcc-hook"
install -m 0755 "$RUNTIME_BIN" "$STAGE/libexec/hpcc-runtime"
if [ "$with_slurm" = 1 ]; then
  install -m 0644 "$TARGET/release/libhpcc_spank.so" "$STAGE/lib/hpcc_spank.so"
fi
# Debug info stays in target/release; the packages get stripped copies.
strip --strip-unneeded "$STAGE"/bin/* "$STAGE"/libexec/hpcc-hook "$STAGE"/libexec/hpcc-runtime
[ "$with_slurm" = 1 ] && strip --strip-unneeded "$STAGE/lib/hpcc_spank.so"

# Man pages and completions from the binary being packaged.
"$STAGE/bin/hpcc" generate-docs --out "$STAGE" >/dev/null
gzip -9n "$STAGE"/man/man*/*

install -m 0644 config/hook.toml "$STAGE/etc/hook.toml"
install -m 0644 packaging/hooks.d/hpcc.json "$STAGE/hooks.d/hpcc.json"
install -m 0644 packaging/slurm/plugstack.conf packaging/slurm/oci.conf \
  packaging/slurm/cli_filter.lua packaging/runc/hook-entry.json "$STAGE/examples/"
# The submit-time placement (docs/slurm.md "Scheduling"): the node side.
mkdir -p "$STAGE/systemd"
install -m 0755 packaging/slurm/hpcc-node-features "$STAGE/libexec/hpcc-node-features"
install -m 0644 packaging/systemd/hpcc-node-features.service "$STAGE/systemd/"
install -m 0644 packaging/systemd/hpcc-cdi-refresh.service "$STAGE/systemd/"
# The RPM's snippets: Slurm's plugin directory and runc's path on RPM systems.
mkdir -p "$STAGE/examples/rpm"
sed 's|/usr/lib/x86_64-linux-gnu/slurm-wlm/|/usr/lib64/slurm/|' \
  packaging/slurm/plugstack.conf >"$STAGE/examples/rpm/plugstack.conf"
sed 's|^RunTimeRun="exec /usr/libexec/hpcc/hpcc-runtime |&--hpcc-runtime=/usr/bin/runc |' \
  packaging/slurm/oci.conf >"$STAGE/examples/rpm/oci.conf"
grep -q /usr/lib64/slurm/hpcc_spank.so "$STAGE/examples/rpm/plugstack.conf" &&
  grep -q -- --hpcc-runtime=/usr/bin/runc "$STAGE/examples/rpm/oci.conf" ||
  { log "error: packaging/slurm/*.conf changed shape: fix the RPM variants above"; exit 1; }

# The plugin's Slurm release, as hpcc --version reports it.
release=$("$STAGE/bin/hpcc" version --json | sed -n 's/.*"built_for": "\([^"]*\)".*/\1/p')
[ "$with_slurm" = 1 ] || release=
printf '%s\n' "$release" >"$STAGE/slurm-release"
if [ -n "$release" ]; then
  # hpcc-slurm's metadata pins the Slurm series it depends on: it must be this one.
  series=${release%.*}
  if ! grep -q "slurmd (<< ${series%%.*}.$(printf '%02d' $(( 10#${series#*.} + 1 ))))" spank/Cargo.toml; then
    log "error: the plugin is built for Slurm $release, but spank/Cargo.toml [package.metadata.deb] pins another series"
    log "       (Depends: slurmd (>= $series), slurmd (<< ...)): add a variant for $series"
    exit 1
  fi
fi
log "staged in $STAGE ($((SECONDS - t0)) s; hpcc $("$STAGE/bin/hpcc" --version | cut -d' ' -f2-))"
