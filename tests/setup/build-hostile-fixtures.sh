#!/usr/bin/env bash
# build-hostile-fixtures.sh [WORKDIR]   (default: <repo>/tests/work)
#
# The hostile-image material of tests/tests/hostile.rs, on top of
# build-fixtures.sh (run first, it is called here):
#   WORKDIR/rootfs/preload   busybox + /hpcc-preload.so, an LD_PRELOAD payload
#                            whose constructor appends "<exe> <pid>" to the
#                            marker file $HPCC_PRELOAD_MARKER on the host
#                            (src/preload_marker.c)
# Every other hostile variant (symlinks to /proc/1/root, FIFOs as ld.so.conf,
# crafted linker caches and ELF objects, 60,000 candidate paths) is made by
# the test in its own copy of a rootfs, where it can be described next to
# the assertion.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${1:-$repo/tests/work}
bash "$here/build-fixtures.sh" "$WORK" >/dev/null
WORK=$(cd "$WORK" && pwd)
log() { printf '[build-hostile-fixtures] %s\n' "$*"; }

BUILD=$WORK/build/hostile ROOTFS=$WORK/rootfs STAMPS=$WORK/.stamps
mkdir -p "$BUILD" "$STAMPS"
HASH=$(cat "${BASH_SOURCE[0]}" "$here/src/preload_marker.c" | sha256sum | cut -d' ' -f1)
if [ -f "$STAMPS/hostile" ] && [ "$(cat "$STAMPS/hostile")" = "$HASH" ] && [ -e "$ROOTFS/preload/hpcc-preload.so" ]; then
  log "rootfs/preload up to date"; exit 0
fi
gcc -O2 -Wall -Wextra -shared -fPIC -o "$BUILD/hpcc-preload.so" "$here/src/preload_marker.c"
rm -rf "$ROOTFS/preload" "$ROOTFS/preload.tmp"
cp -a "$ROOTFS/busybox" "$ROOTFS/preload.tmp"
install -m 0755 "$BUILD/hpcc-preload.so" "$ROOTFS/preload.tmp/hpcc-preload.so"
mv "$ROOTFS/preload.tmp" "$ROOTFS/preload"
# Proof that the payload works: a dynamic host program loads it.
m=$BUILD/marker-check; rm -f "$m"
HPCC_PRELOAD_MARKER=$m LD_PRELOAD=$ROOTFS/preload/hpcc-preload.so /bin/true
grep -q /bin/true "$m" || { echo "the preload payload did not write its marker" >&2; exit 1; }
rm -f "$m"
printf '%s\n' "$HASH" >"$STAMPS/hostile"
log "rootfs/preload: busybox + /hpcc-preload.so (checked: it marks a dynamic program)"
