#!/usr/bin/env bash
# build-fixtures.sh [WORKDIR]   (default: <repo>/tests/work, gitignored)
#
# Builds the container fixtures for hpcc's end-to-end tests from real Debian
# packages (libc6 via `apt-get download`, busybox-static from the host) and
# tiny stand-in libraries compiled here; no image registry is needed:
#   WORKDIR/rootfs/busybox      static busybox only (classic /bin layout)
#   WORKDIR/rootfs/mpich-app    merged-/usr Debian-like: busybox + libc6 + stand-in
#                               libmpich.so.12 + libfabric.so.1, /usr/bin/mpi-version,
#                               /usr/bin/fabric-version, ld.so.cache
#   WORKDIR/rootfs/openmpi-app  same with a stand-in libmpi.so.40 (Open MPI ABI; its
#                               mpi-version is built against the Open MPI headers)
#   WORKDIR/rootfs/escape       /usr/lib/x86_64-linux-gnu is a symlink to the
#                               absolute path /tmp/hpcc-escape-target (inside the
#                               image that is rootfs/tmp/hpcc-escape-target)
#   WORKDIR/rootfs/escape-file  mpich-app whose usr/lib/x86_64-linux-gnu/libmpich.so.12
#                               is a symlink to /tmp/hpcc-escape-target/libmpich.so.12
#   WORKDIR/rootfs/mpich-runpath  mpich-app whose stand-in libmpich.so.12 lives in
#                               /opt/mpich/lib only, and whose /usr/bin/mpi-version
#                               has a RUNPATH into that directory (the loader finds
#                               the image's file there before any linker cache)
#   WORKDIR/oci                 OCI image layout (umoci), tags busybox-unannotated,
#                               busybox-x86_64, busybox-impossible
#   WORKDIR/bundles/busybox     runnable bundle (echo hi) from rootfs/busybox
#   WORKDIR/bundles/oci-busybox-impossible   bundle unpacked from the OCI image
# Re-running skips every step whose output exists and whose inputs (this
# script, make-bundle.sh, src/*.c, busybox, libc6 version) have not changed;
# FORCE=1 rebuilds everything. Use the rootfs trees read-only (copy them, as
# make-bundle.sh and podman-run.sh do): tests share them.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${1:-$repo/tests/work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

t0=$(date +%s)
log() { printf '[build-fixtures] %s\n' "$*"; }
die() { printf '[build-fixtures] error: %s\n' "$*" >&2; exit 1; }

# chroot, ldconfig -r and ownership-preserving copies need root.
[ "$(id -u)" -eq 0 ] || die "must run as root"
for c in gcc jq umoci runc apt-get dpkg-deb readelf chroot; do
  command -v "$c" >/dev/null || die "$c missing: run tests/setup/install-deps.sh"
done
BUSYBOX=/bin/busybox
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' \
  || die "$BUSYBOX is not the static busybox (install busybox-static)"
LDCONFIG=/sbin/ldconfig   # the host's, statically linked: safe with -r (it chroots)
ARCH=$(gcc -print-multiarch)          # x86_64-linux-gnu
MPICH_INC=/usr/include/$ARCH/mpich
OMPI_INC=/usr/lib/$ARCH/openmpi/include
[ -f "$MPICH_INC/mpi.h" ] || die "no MPICH headers at $MPICH_INC (libmpich-dev)"
[ -f "$OMPI_INC/mpi.h" ] || die "no Open MPI headers at $OMPI_INC (libopenmpi-dev)"
ESCAPE_TARGET=/tmp/hpcc-escape-target   # host path the escape fixtures point at

BUILD=$WORK/build DEBS=$WORK/debs ROOTFS=$WORK/rootfs STAMPS=$WORK/.stamps
# FORCE=1 rebuilds everything (e.g. after a tool wrote into a rootfs in place).
if [ "${FORCE:-}" = 1 ]; then log "FORCE=1: rebuilding all outputs"; rm -rf "$STAMPS"; fi
mkdir -p "$BUILD" "$DEBS" "$ROOTFS" "$STAMPS" "$WORK/bundles"

# Inputs hash: any change to the recipe or its sources rebuilds the outputs.
HASH=$( { cat "${BASH_SOURCE[0]}" "$here/make-bundle.sh" "$here"/src/*.c
          "$BUSYBOX" | head -1
          dpkg-query -W -f='${Version}' libc6 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$HASH" ] && [ -e "$2" ]; }
stamp() { printf '%s\n' "$HASH" >"$STAMPS/$1"; }

# --- 1. libc6 from Debian (downloaded once into WORKDIR/debs) ---------------
deb=$(ls "$DEBS"/libc6_*.deb 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$deb" ]; then
  log "apt-get download libc6 -> $DEBS"
  # Sandbox::User=root: _apt cannot write to WORKDIR; avoids a noisy warning.
  if ! (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root libc6); then
    log "download failed, refreshing package lists once"
    apt-get update -q
    (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root libc6)
  fi
  deb=$(ls "$DEBS"/libc6_*.deb | sort -V | tail -1)
else
  log "libc6 package cached: $(basename "$deb")"
fi
LIBC=$BUILD/libc6
if ! fresh libc6 "$LIBC/lib64"; then
  log "dpkg -x $(basename "$deb") -> $LIBC"
  rm -rf "$LIBC"; dpkg-deb -x "$deb" "$LIBC"; stamp libc6
fi

# --- 2. stand-in libraries and probe programs -------------------------------
CFLAGS=(-O2 -Wall -Wextra -g0)
if ! fresh compile "$BUILD/fabric/fabric-version"; then
  log "compiling stand-in libraries and probes in $BUILD"
  rm -rf "$BUILD/mpich" "$BUILD/openmpi" "$BUILD/fabric"
  mkdir -p "$BUILD/mpich" "$BUILD/openmpi" "$BUILD/fabric"
  # Stand-ins are compiled against the real MPI headers: signatures checked.
  gcc "${CFLAGS[@]}" -shared -fPIC -I"$MPICH_INC" -Wl,-soname,libmpich.so.12 \
      -o "$BUILD/mpich/libmpich.so.12" "$here/src/standin_mpi.c"
  gcc "${CFLAGS[@]}" -shared -fPIC -DSTANDIN_OPENMPI -I"$OMPI_INC" -Wl,-soname,libmpi.so.40 \
      -o "$BUILD/openmpi/libmpi.so.40" "$here/src/standin_mpi.c"
  gcc "${CFLAGS[@]}" -shared -fPIC -Wl,-soname,libfabric.so.1 \
      -o "$BUILD/fabric/libfabric.so.1" "$here/src/standin_fabric.c"
  # Link against the stand-in: DT_NEEDED is its SONAME, exactly as with the real lib.
  gcc "${CFLAGS[@]}" -I"$MPICH_INC" -o "$BUILD/mpich/mpi-version" "$here/src/mpi_version.c" \
      -L"$BUILD/mpich" -l:libmpich.so.12
  gcc "${CFLAGS[@]}" -I"$OMPI_INC" -o "$BUILD/openmpi/mpi-version" "$here/src/mpi_version.c" \
      -L"$BUILD/openmpi" -l:libmpi.so.40
  gcc "${CFLAGS[@]}" -o "$BUILD/fabric/fabric-version" "$here/src/fabric_version.c" -ldl
  for f in mpich/libmpich.so.12 openmpi/libmpi.so.40 fabric/libfabric.so.1; do
    log "  $f: $(readelf -d "$BUILD/$f" | grep -o 'soname: \[[^]]*\]')"
  done
  for f in mpich/mpi-version openmpi/mpi-version fabric/fabric-version; do
    log "  $f: $(readelf -d "$BUILD/$f" | grep NEEDED | grep -o '\[[^]]*\]' | tr '\n' ' ')"
  done
  stamp compile
fi

# --- helpers for rootfs assembly --------------------------------------------
# Debian 12 images use merged /usr: /bin, /sbin, /lib, /lib64 -> usr/...
merged_usr() {
  mkdir -p "$1"/usr/bin "$1"/usr/sbin "$1"/usr/lib "$1"/usr/lib64
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$1/$d"; done
}
# busybox with one symlink per applet (like `busybox --install -s`), but never
# over a file a package already put there; plus the files every image has.
busybox_base() {
  local r=$1 a
  mkdir -p "$r"/bin "$r"/sbin "$r"/usr/bin "$r"/usr/sbin "$r"/etc "$r"/proc "$r"/sys \
           "$r"/dev "$r"/tmp "$r"/var/tmp "$r"/root "$r"/run
  chmod 1777 "$r/tmp" "$r/var/tmp"
  install -m 0755 "$BUSYBOX" "$r/bin/busybox"
  for a in $("$BUSYBOX" --list-full); do
    [ "$a" = linuxrc ] && continue   # initrd entry point, not wanted in an image
    [ -e "$r/$a" ] || [ -L "$r/$a" ] || ln -s /bin/busybox "$r/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
}
# Copy the extracted libc6 in; --keep-directory-symlink keeps merged-/usr links.
add_libc() {
  tar -C "$LIBC" -cf - . | tar -C "$1" -xf - --keep-directory-symlink
  printf 'include /etc/ld.so.conf.d/*.conf\n/usr/lib/%s\n' "$ARCH" >"$1/etc/ld.so.conf"
}
# Install a shared library Debian-style: real file NAME.0.0 + SONAME symlink.
add_lib() {  # SRC DESTDIR
  local n; n=$(basename "$1")
  install -m 0644 "$1" "$2/$n.0.0"
  ln -sfn "$n.0.0" "$2/$n"
}
ldcache() {
  # Our own fixture, built once here; the host ldconfig chroots into it.
  "$LDCONFIG" -r "$1"
}
# Build into NAME.tmp and rename, so a half-built rootfs never looks done.
build_rootfs() {  # NAME FUNCTION
  local name=$1 fn=$2 out=$ROOTFS/$1
  if fresh "rootfs-$name" "$out"; then log "rootfs/$name up to date"; return; fi
  log "building rootfs/$name"
  rm -rf "$out" "$out.tmp"; mkdir -p "$out.tmp"
  "$fn" "$out.tmp"
  mv "$out.tmp" "$out"
  stamp "rootfs-$name"
}
chk() {  # ROOTFS CMD EXPECTED-SUBSTRING
  local got
  got=$(chroot "$1" "$2" 2>&1) || die "chroot $1 $2 failed: $got"
  case $got in *"$3"*) log "  chroot $(basename "$1") $2: $(head -1 <<<"$got")" ;;
               *) die "chroot $1 $2 printed '$got', expected '$3'" ;; esac
}

# --- 3. rootfs trees ---------------------------------------------------------
mk_busybox() { busybox_base "$1"; }

mk_mpich_app() {
  local r=$1 lib=$1/usr/lib/$ARCH
  merged_usr "$r"; add_libc "$r"; busybox_base "$r"
  add_lib "$BUILD/mpich/libmpich.so.12" "$lib"
  add_lib "$BUILD/fabric/libfabric.so.1" "$lib"
  install -m 0755 "$BUILD/mpich/mpi-version" "$BUILD/fabric/fabric-version" "$r/usr/bin/"
  ldcache "$r"
}

mk_openmpi_app() {
  local r=$1 lib=$1/usr/lib/$ARCH
  merged_usr "$r"; add_libc "$r"; busybox_base "$r"
  add_lib "$BUILD/openmpi/libmpi.so.40" "$lib"
  add_lib "$BUILD/fabric/libfabric.so.1" "$lib"
  install -m 0755 "$BUILD/openmpi/mpi-version" "$BUILD/fabric/fabric-version" "$r/usr/bin/"
  ldcache "$r"
}

# Classic layout (real /lib, /usr): the image's /usr/lib/<arch> is an ABSOLUTE
# symlink to /tmp/hpcc-escape-target. In the container (and in ldconfig's
# chroot) that is rootfs/tmp/hpcc-escape-target, where the image's libraries
# really are; a hook that follows it from the host writes onto the HOST's /tmp.
mk_escape() {
  local r=$1 tgt=$1$ESCAPE_TARGET
  busybox_base "$r"; add_libc "$r"
  mkdir -p "$(dirname "$tgt")"
  mv "$r/usr/lib/$ARCH" "$tgt"
  ln -s "$ESCAPE_TARGET" "$r/usr/lib/$ARCH"
  # Write through the in-image path only, never through the symlink.
  add_lib "$BUILD/mpich/libmpich.so.12" "$tgt"
  add_lib "$BUILD/fabric/libfabric.so.1" "$tgt"
  install -m 0755 "$BUILD/mpich/mpi-version" "$BUILD/fabric/fabric-version" "$r/usr/bin/"
  ldcache "$r"
}

# mpich-app whose libmpich.so.12 is an absolute symlink to
# /tmp/hpcc-escape-target/libmpich.so.12 (the stand-in lives there in the image).
mk_escape_file() {
  local r=$1 lib=$1/usr/lib/$ARCH
  cp -a "$ROOTFS/mpich-app/." "$r/"
  mkdir -p "$r$ESCAPE_TARGET"
  install -m 0644 "$BUILD/mpich/libmpich.so.12" "$r$ESCAPE_TARGET/libmpich.so.12"
  rm -f "$lib/libmpich.so.12" "$lib/libmpich.so.12.0.0"
  ln -s "$ESCAPE_TARGET/libmpich.so.12" "$lib/libmpich.so.12"
  ldcache "$r"
}

# An image whose program names its MPI directory itself (RUNPATH, as
# Spack and vendor MPI builds do): the loader looks there before any
# linker cache, so only a bind over that very file replaces the library.
mk_mpich_runpath() {
  local r=$1 opt=$1/opt/mpich/lib
  cp -a "$ROOTFS/mpich-app/." "$r/"
  mkdir -p "$opt" "$r/etc/ld.so.conf.d"
  rm -f "$r/usr/lib/$ARCH/libmpich.so.12" "$r/usr/lib/$ARCH/libmpich.so.12.0.0"
  add_lib "$BUILD/mpich/libmpich.so.12" "$opt"
  gcc "${CFLAGS[@]}" -I"$MPICH_INC" -o "$r/usr/bin/mpi-version" "$here/src/mpi_version.c" \
      -L"$BUILD/mpich" -l:libmpich.so.12 -Wl,--enable-new-dtags,-rpath,/opt/mpich/lib
  readelf -d "$r/usr/bin/mpi-version" | grep -q 'RUNPATH.*\[/opt/mpich/lib\]' ||
    die "mpich-runpath: mpi-version has no RUNPATH /opt/mpich/lib"
  echo /opt/mpich/lib >"$r/etc/ld.so.conf.d/mpich.conf"
  ldcache "$r"
}

build_rootfs busybox mk_busybox
build_rootfs mpich-app mk_mpich_app
build_rootfs openmpi-app mk_openmpi_app
build_rootfs escape mk_escape
build_rootfs escape-file mk_escape_file
build_rootfs mpich-runpath mk_mpich_runpath

# Quick proof that each image runs its own stand-ins (cheap: always done).
log "checking the rootfs trees with chroot"
chk "$ROOTFS/busybox" /bin/busybox "BusyBox v"
chk "$ROOTFS/mpich-app" /usr/bin/mpi-version "hpcc stand-in MPICH 0.0"
chk "$ROOTFS/mpich-app" /usr/bin/fabric-version "libfabric 1.0"
chk "$ROOTFS/openmpi-app" /usr/bin/mpi-version "hpcc stand-in Open MPI 0.0"
chk "$ROOTFS/escape" /usr/bin/mpi-version "hpcc stand-in MPICH 0.0"
chk "$ROOTFS/escape-file" /usr/bin/mpi-version "hpcc stand-in MPICH 0.0"
chk "$ROOTFS/mpich-runpath" /usr/bin/mpi-version "hpcc stand-in MPICH 0.0"
for r in mpich-app openmpi-app escape escape-file; do
  log "  ld.so.cache of $r: $("$LDCONFIG" -p -r "$ROOTFS/$r" | grep -E 'libmpi(ch)?\.so|libfabric' | sed 's/^[[:space:]]*//; s/ (.*=>/ =>/' | tr '\n' ';')"
done
# Same binary with the host's real libraries: what injection should achieve.
if real=$(timeout 30 "$ROOTFS/mpich-app/usr/bin/mpi-version" 2>&1 </dev/null); then
  log "  host libs: mpi-version -> $(head -1 <<<"$real")"
else
  log "  warning: mpi-version with the host MPICH failed: $(head -3 <<<"$real" | tr '\n' ' ')"
fi
log "  host libs: fabric-version -> $("$ROOTFS/mpich-app/usr/bin/fabric-version" 2>&1 || true)"
if [ -e "$ESCAPE_TARGET" ] || [ -L "$ESCAPE_TARGET" ]; then
  log "  warning: host $ESCAPE_TARGET exists (left by an earlier run?); escape tests expect it absent"
fi

# --- 4. OCI image layout ----------------------------------------------------
OCI=$WORK/oci
if fresh oci "$OCI/index.json"; then
  log "oci layout up to date"
else
  log "building OCI layout $OCI"
  rm -rf "$OCI" "$OCI.tmp"
  umoci init --layout "$OCI.tmp"
  umoci new --image "$OCI.tmp:busybox-unannotated"
  umoci insert --image "$OCI.tmp:busybox-unannotated" "$ROOTFS/busybox" /
  umoci config --image "$OCI.tmp:busybox-unannotated" --config.cmd /bin/sh
  # Labels go into the image config; `umoci unpack` copies them to annotations.
  umoci config --image "$OCI.tmp:busybox-unannotated" --tag busybox-x86_64 \
    --config.label org.supercontainers.hardware.cpu.optimized.mode=architecture \
    --config.label org.supercontainers.hardware.cpu.optimized.version=x86_64
  # a64fx: an aarch64 microarchitecture, impossible on any x86_64 node.
  umoci config --image "$OCI.tmp:busybox-unannotated" --tag busybox-impossible \
    --config.label org.supercontainers.hardware.cpu.optimized.mode=microarchitecture \
    --config.label org.supercontainers.hardware.cpu.optimized.version=a64fx
  umoci gc --layout "$OCI.tmp"
  mv "$OCI.tmp" "$OCI"
  stamp oci
fi
log "  tags: $(umoci ls --layout "$OCI" | tr '\n' ' ')"

# --- 5. ready-made bundles ----------------------------------------------------
if ! fresh bundle-busybox "$WORK/bundles/busybox/config.json"; then
  "$here/make-bundle.sh" "$ROOTFS/busybox" "$WORK/bundles/busybox"
  stamp bundle-busybox
fi
b=$WORK/bundles/oci-busybox-impossible
if ! fresh bundle-oci "$b/config.json"; then
  "$here/make-bundle.sh" "$OCI:busybox-impossible" "$b"
  stamp bundle-oci
fi
v=$(jq -r '.annotations["org.supercontainers.hardware.cpu.optimized.version"] // empty' "$b/config.json")
[ "$v" = a64fx ] || die "umoci unpack did not carry the image label into annotations ($b)"
log "  umoci unpack carried the label: $(basename "$b") annotation version=$v"

log "done in $(( $(date +%s) - t0 ))s; fixtures under $WORK"
