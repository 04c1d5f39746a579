#!/usr/bin/env bash
# build-mpi-fixtures.sh [WORKDIR]   (default: <repo>/tests/work, gitignored)
#
# Fixtures for the MPI rig (tests/setup/MPI-RIG.md), next to build-fixtures.sh's
# (whose libc6 download cache WORKDIR/debs it shares):
#   WORKDIR/mpi/bin/ring-mpich, pingpong-mpich   mpicc.mpich   (NEEDED libmpich.so.12)
#   WORKDIR/mpi/bin/ring-ompi,  pingpong-ompi    mpicc.openmpi (NEEDED libmpi.so.40)
#     (run bare metal on the rig with the host's real MPI)
#   WORKDIR/rootfs/mpich-ring   merged-/usr busybox + libc6 + /usr/bin/{ring,pingpong}
#                               built against Debian MPICH, and the image's OWN
#                               libmpich.so.12: a stand-in (standin_mpi.c +
#                               standin_mpi_ring.c, a singleton "MPI") that hpcc
#                               must replace with the host's MPICH
#   WORKDIR/rootfs/ompi-ring    same for Open MPI (stand-in libmpi.so.40)
#   WORKDIR/mpi/broken/libmpich.so.12
#                               a host-side stand-in MPICH whose MPI_Init aborts
#                               (-DSTANDIN_BROKEN): a policy that injects it must be
#                               caught by hpcc verify (tests/tests/verify.rs)
#   WORKDIR/mpi/inject-mpich.txt, inject-ompi.txt
#                               what a runtime wrapper binds into a container to
#                               run the host MPI there (see tests/setup/mpi-wrapper.sh):
#                               "lib HOSTPATH SONAME" (-> /opt/hpcc/lib/SONAME) and
#                               "dir HOSTPATH DEST" (a directory bound at DEST)
# Debian 12 has no OSU micro-benchmarks package (apt-cache search osu: none),
# hence src/pingpong.c. Re-running rebuilds only what changed; FORCE=1 rebuilds all.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${1:-$repo/tests/work}
mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd)
log() { printf '[build-mpi-fixtures] %s\n' "$*"; }
die() { printf '[build-mpi-fixtures] error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
for c in gcc mpicc.mpich mpicc.openmpi dpkg-deb readelf ldd chroot; do
  command -v "$c" >/dev/null || die "$c missing (mpich libmpich-dev openmpi-bin libopenmpi-dev)"
done
BUSYBOX=/bin/busybox LDCONFIG=/sbin/ldconfig
ARCH=$(gcc -print-multiarch)
LIBDIR=/usr/lib/$ARCH
MPICH_INC=/usr/include/$ARCH/mpich OMPI_INC=$LIBDIR/openmpi/include
OUT=$WORK/mpi BUILD=$WORK/mpi/build DEBS=$WORK/debs ROOTFS=$WORK/rootfs
mkdir -p "$OUT/bin" "$BUILD" "$DEBS" "$ROOTFS"

HASH=$( { cat "${BASH_SOURCE[0]}" "$here"/src/{ring,pingpong,standin_mpi,standin_mpi_ring}.c
          dpkg-query -W -f='${Version} ' libc6 libmpich12 libopenmpi3 2>/dev/null || true; } |
        sha256sum | cut -d' ' -f1)
if [ "${FORCE:-}" != 1 ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$HASH" ] &&
   [ -d "$ROOTFS/mpich-ring" ] && [ -d "$ROOTFS/ompi-ring" ] && [ -f "$OUT/broken/libmpich.so.12" ]; then
  log "up to date ($OUT, rootfs/mpich-ring, rootfs/ompi-ring)"; exit 0
fi
rm -f "$OUT/.stamp"

# --- programs ---------------------------------------------------------------
CF=(-O2 -Wall -Wextra -g0)
log "compiling ring and pingpong"
mpicc.mpich "${CF[@]}" -o "$OUT/bin/ring-mpich" "$here/src/ring.c"
mpicc.mpich "${CF[@]}" -o "$OUT/bin/pingpong-mpich" "$here/src/pingpong.c"
mpicc.openmpi "${CF[@]}" -o "$OUT/bin/ring-ompi" "$here/src/ring.c"
mpicc.openmpi "${CF[@]}" -o "$OUT/bin/pingpong-ompi" "$here/src/pingpong.c"
for f in "$OUT"/bin/*; do
  log "  $(basename "$f"): NEEDED $(readelf -d "$f" | grep NEEDED | grep -o '\[[^]]*\]' | tr '\n' ' ')"
done
log "compiling the stand-in MPI libraries (singleton, for the images)"
gcc "${CF[@]}" -shared -fPIC -I"$MPICH_INC" -Wl,-soname,libmpich.so.12 \
    -o "$BUILD/libmpich.so.12" "$here/src/standin_mpi.c" "$here/src/standin_mpi_ring.c"
gcc "${CF[@]}" -shared -fPIC -DSTANDIN_OPENMPI -I"$OMPI_INC" -Wl,-soname,libmpi.so.40 \
    -o "$BUILD/libmpi.so.40" "$here/src/standin_mpi.c" "$here/src/standin_mpi_ring.c"
mkdir -p "$OUT/broken"
gcc "${CF[@]}" -shared -fPIC -DSTANDIN_BROKEN -I"$MPICH_INC" -Wl,-soname,libmpich.so.12 \
    -o "$OUT/broken/libmpich.so.12" "$here/src/standin_mpi.c" "$here/src/standin_mpi_ring.c"

# --- libc6 (same cache as build-fixtures.sh) ---------------------------------
deb=$(ls "$DEBS"/libc6_*.deb 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$deb" ]; then
  log "apt-get download libc6 -> $DEBS"
  (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root libc6) ||
    { apt-get update -q; (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root libc6); }
  deb=$(ls "$DEBS"/libc6_*.deb | sort -V | tail -1)
fi
rm -rf "$BUILD/libc6"; dpkg-deb -x "$deb" "$BUILD/libc6"

# --- images -----------------------------------------------------------------
mk_image() {  # NAME STANDIN-LIB FLAVOUR
  local r=$ROOTFS/$1 a
  rm -rf "$r" "$r.tmp"; mkdir -p "$r.tmp"; r=$r.tmp
  mkdir -p "$r"/usr/bin "$r"/usr/sbin "$r"/usr/lib "$r"/usr/lib64
  for a in bin sbin lib lib64; do ln -s "usr/$a" "$r/$a"; done
  tar -C "$BUILD/libc6" -cf - . | tar -C "$r" -xf - --keep-directory-symlink
  mkdir -p "$r"/etc "$r"/proc "$r"/sys "$r"/dev "$r"/tmp "$r"/root "$r"/run "$r"/opt
  chmod 1777 "$r/tmp"
  install -m 0755 "$BUSYBOX" "$r/bin/busybox"
  for a in $("$BUSYBOX" --list-full); do
    [ "$a" = linuxrc ] || [ -e "$r/$a" ] || [ -L "$r/$a" ] || ln -s /bin/busybox "$r/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  printf 'include /etc/ld.so.conf.d/*.conf\n/usr/lib/%s\n' "$ARCH" >"$r/etc/ld.so.conf"
  local n; n=$(basename "$2")
  install -m 0644 "$2" "$r/usr/lib/$ARCH/$n.0.0"; ln -sfn "$n.0.0" "$r/usr/lib/$ARCH/$n"
  install -m 0755 "$OUT/bin/ring-$3" "$r/usr/bin/ring"
  install -m 0755 "$OUT/bin/pingpong-$3" "$r/usr/bin/pingpong"
  "$LDCONFIG" -r "$r"
  mv "$r" "$ROOTFS/$1"
  local got; got=$(chroot "$ROOTFS/$1" /usr/bin/ring 2>&1 || true)
  case $got in "rank 0 of 1 sum 1 ok"*"stand-in"*) log "  rootfs/$1: chroot ring -> $got" ;;
               *) die "rootfs/$1: chroot ring printed: $got" ;; esac
}
log "building rootfs/mpich-ring and rootfs/ompi-ring"
mk_image mpich-ring "$BUILD/libmpich.so.12" mpich
mk_image ompi-ring "$BUILD/libmpi.so.40" ompi

# --- what to inject for the host MPI ------------------------------------------
# The ldd closure of the host library (and, for Open MPI, of its plugins),
# without glibc (the image brings its own), as "lib HOSTPATH SONAME";
# plugin/data directories as "dir PATH" (bound at the same path: Open MPI and
# PMIx look for their components at their compiled-in prefix).
closure() {  # FILE... -> "lib path soname" lines
  ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
    grep -Ev '^(libc|libm|libdl|libpthread|librt|libresolv|libutil|ld-linux-x86-64)\.so' |
    while read -r so path; do echo "lib $(readlink -f "$path") $so"; done | sort -u
}
{ closure "$LIBDIR/libmpich.so.12"
  echo "lib $(readlink -f "$LIBDIR/libmpich.so.12") libmpich.so.12"
  # UCX loads its transports from <dir of libucs>/ucx
  echo "dir $LIBDIR/ucx /opt/hpcc/lib/ucx"
} | sort -u >"$OUT/inject-mpich.txt"
{ closure "$LIBDIR/libmpi.so.40" "$LIBDIR"/openmpi/lib/openmpi3/*.so "$LIBDIR"/pmix2/lib/pmix/*.so
  echo "lib $(readlink -f "$LIBDIR/libmpi.so.40") libmpi.so.40"
  echo "dir $LIBDIR/openmpi $LIBDIR/openmpi"
  echo "dir $LIBDIR/pmix2 $LIBDIR/pmix2"
  echo "dir /usr/share/openmpi /usr/share/openmpi"
  echo "dir /etc/openmpi /etc/openmpi"
} | sort -u >"$OUT/inject-ompi.txt"
log "  inject-mpich.txt: $(wc -l <"$OUT/inject-mpich.txt") entries; inject-ompi.txt: $(wc -l <"$OUT/inject-ompi.txt")"
echo "$HASH" >"$OUT/.stamp"
log "done"
