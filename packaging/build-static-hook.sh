#!/usr/bin/env bash
# build-static-hook.sh [OUTDIR]   (default: <repo>/target/static)
# (WITH_RUNTIME=1: hpcc-runtime as well, see the end)
#
# Builds hpcc-hook statically linked (glibc static, `crt-static`): no dynamic
# loader ever runs in it, so LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT or any
# other loader variable in its environment is inert. That matters because
# runc gives a hook listed at createContainer the container's own
# process.env, which the image writes, with the rootfs as cwd
# (CVE-2025-23266 was that attack on another vendor's hook). A static build
# has no NVML code (it would need dlopen): on a fingerprint cache miss the
# hook runs the dynamic `hpcc fingerprint --gpus` installed next to it, with
# an empty environment.
#
# Writes OUTDIR/hpcc-hook (static) and checks that it is static and runs.
# PROFILE=release (default, what packages ship) or PROFILE=dev (the tests:
# faster to build). This is the only way to build hpcc-hook: its [[bin]]
# needs the feature `static-hook`, which this script passes, and the binary
# does not compile without crt-static (hook/src/bin/hpcc-hook.rs), so a
# plain `cargo build --release` or `cargo install --path hook` gives no
# hpcc-hook at all. Packages: `bash packaging/build-static-hook.sh DIR` and
# install DIR/hpcc-hook as /usr/libexec/hpcc/hpcc-hook, next to the normal
# (dynamic) /usr/bin/hpcc from `cargo build --release`.
# (tests/setup/build-static-hook.sh runs this script.)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
OUT=${1:-$repo/target/static}
PROFILE=${PROFILE:-release}
TARGET=$(rustc -vV | sed -n 's/^host: //p')    # x86_64-unknown-linux-gnu
case $TARGET in *-linux-gnu) ;; *) echo "build-static-hook: host $TARGET is not a glibc target" >&2; exit 1 ;; esac
log() { printf '[build-static-hook] %s\n' "$*"; }

cd "$repo"
# --target keeps the static artifacts apart (target/$TARGET/) from the
# normal dynamic build, and RUSTFLAGS then apply to them only, not to build
# scripts and proc macros.
log "cargo build --profile $PROFILE --target $TARGET -p hpcc-hook --features static-hook --bin hpcc-hook (crt-static)"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build -q --locked --profile "$PROFILE" --target "$TARGET" -p hpcc-hook --features static-hook --bin hpcc-hook
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
bin=${CARGO_TARGET_DIR:-$repo/target}/$TARGET/$dir/hpcc-hook
mkdir -p "$OUT"
# A temporary name of this process's own: test processes build at once.
install -m 0755 "$bin" "$OUT/hpcc-hook.tmp.$$"
mv "$OUT/hpcc-hook.tmp.$$" "$OUT/hpcc-hook"

# Proofs, every build, of each static binary: static for the kernel (no
# PT_INTERP), for file(1), for ldd; no NVML code (nvml-wrapper looks its
# entry points up by name at run time, so a linked copy carries the string
# `nvmlInit_v2`; `libnvidia-ml.so.1` alone is no proof: the GPU tweak lists
# it among the driver libraries it mounts); no NSS or iconv lookup (below);
# and it runs with an empty environment. Counts, never `grep -q` behind a
# pipe: under pipefail its early exit fails the pipeline and a match would
# pass unseen.
prove_static() { # NAME BIN RUN-ARGS EXPECTED-OUTPUT
  local name=$1 bin=$2 args=$3 expect=$4 f l n nss out
  if readelf -lW "$bin" | grep -c 'INTERP' >/dev/null; then
    echo "build-static-hook: $bin has a PT_INTERP: not static" >&2; exit 1
  fi
  f=$(file -b "$bin")
  case $f in *"statically linked"*|*"static-pie linked"*) ;; *)
    echo "build-static-hook: file(1) says of $bin: $f" >&2; exit 1 ;; esac
  l=$(ldd "$bin" 2>&1 || true)
  case $l in *"statically linked"*|*"not a dynamic executable"*) ;; *)
    echo "build-static-hook: ldd lists libraries for $bin: $l" >&2; exit 1 ;; esac
  n=$(strings -a "$bin" | grep -c 'nvmlInit_v2' || true)
  if [ "$n" != 0 ]; then
    echo "build-static-hook: the static $name links NVML code (nvmlInit_v2)" >&2; exit 1
  fi
  # glibc's static dlopen is always linked (libdl is part of libc since
  # 2.34); what must be absent is every caller that would use it: NSS
  # lookups load the modules nsswitch.conf names, with LD_LIBRARY_PATH
  # honoured.
  nss=$(nm "$bin" 2>/dev/null | grep -E ' [TtWw] (getpw(nam|uid|ent)|getgr(nam|gid|ent|ouplist)|getspnam|getaddrinfo|getnameinfo|gethostbyname2?|gethostbyaddr|getservbyname|getservbyport|initgroups|iconv_open)(_r)?$' || true)
  if [ -n "$nss" ]; then
    echo "build-static-hook: the static $name links NSS/iconv lookups (static dlopen): $nss" >&2; exit 1
  fi
  # shellcheck disable=SC2086 # the arguments are words
  out=$(env -i "$bin" $args 2>&1 || true)
  case $out in *"$expect"*) ;; *)
    echo "build-static-hook: $bin does not run: $out" >&2; exit 1 ;; esac
  log "$bin: $f"
}
prove_static hook "$OUT/hpcc-hook" bogus-stage "unknown hook stage"

# WITH_RUNTIME=1: hpcc-runtime too, statically linked the same way (what
# packaging/build-release.sh ships and tests/bench/run-all.sh measures). It
# stands in front of every container start: static, it pays no dynamic
# loader and no symbol binding (0.3-0.4 ms of CPU per start on the machine
# of BENCHMARKS.md), and no loader variable of the engine's or the job's
# environment reaches it. Its GPU facts then come from the `hpcc` helper,
# as the hook's do (GpuProbe::for_this_build). The deps are shared with the
# hook's build above (same target, same RUSTFLAGS).
if [ "${WITH_RUNTIME:-0}" = 1 ]; then
  log "cargo build --profile $PROFILE --target $TARGET -p hpcc-runtime (crt-static)"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build -q --locked --profile "$PROFILE" --target "$TARGET" -p hpcc-runtime --bin hpcc-runtime
  install -m 0755 "${CARGO_TARGET_DIR:-$repo/target}/$TARGET/$dir/hpcc-runtime" "$OUT/hpcc-runtime.tmp.$$"
  mv "$OUT/hpcc-runtime.tmp.$$" "$OUT/hpcc-runtime"
  prove_static runtime "$OUT/hpcc-runtime" "--hpcc-bogus=1 state x" "unknown option --hpcc-bogus"
fi
