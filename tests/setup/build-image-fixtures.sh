#!/usr/bin/env bash
# build-image-fixtures.sh [WORKDIR]   (default: <repo>/tests/work/image-side, gitignored)
#
# OCI image layouts for the image-side tests (hpcc check / annotate / match),
# built with umoci from real Debian packages (`apt-get download` + `dpkg-deb -x`,
# no registry) and busybox-static. Nothing here is ever run as a container.
#   WORKDIR/oci   layout with tags
#     plain          busybox + libc6, CMD /bin/sh, no annotation
#     mpich          + libmpich12 libucx0 libhwloc15, a program linked with MPICH,
#                    ENTRYPOINT /usr/local/bin/entrypoint.sh (exec "$@"), CMD /bin/sh,
#                    /var/lib/dpkg/status
#     openmpi        + libopenmpi3 libfabric1 libucx0 bash python3.11-minimal, a program
#                    linked with Open MPI as ENTRYPOINT (the application aliased), CMD
#     openmpi-zstd   the same, layers recompressed with zstd (skopeo)
#     plain-tar      plain with uncompressed layers (skopeo)
#     avx512         plain + /usr/local/bin/saxpy built with -march=x86-64-v4 (no ISA note)
#     avx512-noted   the same built with -mneeded (GNU_PROPERTY_X86_ISA_1_NEEDED = v4)
#     + an NFD image compatibility artifact whose subject is avx512 (needs AVX512F)
#   WORKDIR/plain.tar   OCI archive of plain (skopeo)
# Re-running rebuilds only when this script changed (FORCE=1: always).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${1:-$repo/tests/work/image-side}
mkdir -p "$WORK"; WORK=$(cd "$WORK" && pwd)
log() { printf '[build-image-fixtures] %s\n' "$*"; }
die() { printf '[build-image-fixtures] error: %s\n' "$*" >&2; exit 1; }
for c in gcc umoci skopeo jq zstd apt-get dpkg-deb sha256sum mpicc.mpich mpicc.openmpi; do
  command -v "$c" >/dev/null || die "$c missing: run tests/setup/install-deps.sh"
done
BUSYBOX=/bin/busybox
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || die "$BUSYBOX is not busybox-static"

HASH=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-}" != 1 ] && [ -f "$WORK/.stamp" ] && [ "$(cat "$WORK/.stamp")" = "$HASH" ] \
   && [ -f "$WORK/oci/index.json" ]; then
  log "up to date: $WORK"; exit 0
fi
t0=$(date +%s)
DEBS=$WORK/debs BUILD=$WORK/build
rm -rf "$BUILD" "$WORK/oci" "$WORK/oci.tmp" "$WORK/plain.tar"
mkdir -p "$DEBS" "$BUILD"

PKGS=(libc6 libmpich12 libopenmpi3 libfabric1 libucx0 libhwloc15 bash python3.11-minimal)
missing=()
for p in "${PKGS[@]}"; do ls "$DEBS/${p}_"*.deb >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get download ${missing[*]}"
  (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}") \
    || { apt-get update -q; (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}"); }
fi
deb() { ls "$DEBS/${1}_"*.deb | sort -V | tail -1; }

# A Debian 12-like root: merged /usr, busybox applets, then packages copied
# in with --keep-directory-symlink (dpkg's own behaviour on merged /usr).
base() {
  local r=$1 a
  mkdir -p "$r"/usr/bin "$r"/usr/sbin "$r"/usr/lib "$r"/usr/lib64 "$r"/etc "$r"/tmp "$r"/var/lib/dpkg "$r"/usr/local/bin
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$r/$d"; done
  install -m 0755 "$BUSYBOX" "$r/usr/bin/busybox"
  for a in $("$BUSYBOX" --list-full); do
    [ "$a" = linuxrc ] && continue
    a=${a#/}; a=${a#usr/}; [ -e "$r/usr/$a" ] || ln -s /usr/bin/busybox "$r/usr/$a"
  done
  : >"$r/var/lib/dpkg/status"
}
add_deb() {  # ROOT PKG
  local x; x=$(mktemp -d "$BUILD/x.XXXX")
  dpkg-deb -x "$(deb "$2")" "$x"
  tar -C "$x" -cf - . | tar -C "$1" -xf - --keep-directory-symlink
  rm -rf "$x"
  # What dpkg would record: the package, installed.
  { dpkg-deb -f "$(deb "$2")" Package Version Architecture; echo "Status: install ok installed"; echo; } \
    >>"$1/var/lib/dpkg/status"
}

log "compiling probes"
cat >"$BUILD/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
  int rank = 0; MPI_Init(&argc, &argv); MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  printf("rank %d\n", rank); MPI_Finalize(); return 0;
}
EOF
cat >"$BUILD/saxpy.c" <<'EOF'
#include <stdio.h>
#define N 4096
float a[N], b[N], c[N];
__attribute__((noinline)) void saxpy(float s) { for (int i = 0; i < N; i++) c[i] = a[i] * s + b[i]; }
int main(int argc, char **argv) {
  (void)argv; for (int i = 0; i < N; i++) { a[i] = i; b[i] = argc; }
  saxpy(2.0f); printf("%f\n", c[N - 1]); return 0;
}
EOF
mpicc.mpich -O2 -o "$BUILD/mpi-hello-mpich" "$BUILD/hello.c"
mpicc.openmpi -O2 -o "$BUILD/mpi-hello-openmpi" "$BUILD/hello.c"
gcc -O3 -march=x86-64-v4 -mprefer-vector-width=512 -o "$BUILD/saxpy" "$BUILD/saxpy.c"
gcc -O3 -march=x86-64-v4 -mprefer-vector-width=512 -mneeded -o "$BUILD/saxpy-noted" "$BUILD/saxpy.c"
# (no grep -q after a pipe: with pipefail its early exit fails the writer)
[ "$(objdump -d "$BUILD/saxpy" | grep -c zmm)" -gt 0 ] || die "saxpy has no AVX-512 (zmm) instruction"
[ "$(readelf -n "$BUILD/saxpy-noted" | grep -c 'x86 ISA needed:.*x86-64-v4')" -gt 0 ] || die "-mneeded wrote no ISA note"

R=$BUILD/rootfs
mkdir -p "$R"
base "$R/plain"; add_deb "$R/plain" libc6
base "$R/mpich"; for p in libc6 libmpich12 libucx0 libhwloc15; do add_deb "$R/mpich" "$p"; done
install -m 0755 "$BUILD/mpi-hello-mpich" "$R/mpich/usr/local/bin/mpi-hello"
printf '#!/bin/sh\n# Prepare the environment, then run what was asked.\nexport OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}\nexec "$@"\n' \
  >"$R/mpich/usr/local/bin/entrypoint.sh"
chmod 0755 "$R/mpich/usr/local/bin/entrypoint.sh"
base "$R/openmpi"
for p in libc6 libopenmpi3 libfabric1 libucx0 libhwloc15 bash python3.11-minimal; do add_deb "$R/openmpi" "$p"; done
install -m 0755 "$BUILD/mpi-hello-openmpi" "$R/openmpi/usr/local/bin/mpi-hello"
base "$R/avx512"; add_deb "$R/avx512" libc6; install -m 0755 "$BUILD/saxpy" "$R/avx512/usr/local/bin/saxpy"
base "$R/avx512-noted"; add_deb "$R/avx512-noted" libc6; install -m 0755 "$BUILD/saxpy-noted" "$R/avx512-noted/usr/local/bin/saxpy"

log "building the OCI layout"
L=$WORK/oci.tmp
umoci init --layout "$L"
for t in plain mpich openmpi avx512 avx512-noted; do
  umoci new --image "$L:$t"
  umoci insert --image "$L:$t" "$R/$t" /
done
umoci config --image "$L:plain" --config.cmd /bin/sh
umoci config --image "$L:mpich" --config.entrypoint /usr/local/bin/entrypoint.sh --config.cmd /bin/sh
umoci config --image "$L:openmpi" --config.entrypoint /usr/local/bin/mpi-hello --config.cmd --help
umoci config --image "$L:avx512" --config.cmd /usr/local/bin/saxpy
umoci config --image "$L:avx512-noted" --config.cmd /usr/local/bin/saxpy
umoci gc --layout "$L"
skopeo copy -q "oci:$L:plain" "oci-archive:$WORK/plain.tar:plain"

# The NFD compatibility artifact for avx512, attached by subject (what
# `oras attach` writes into a registry, here into the layout).
blob() {  # FILE MEDIATYPE -> descriptor JSON
  local h s; h=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$L/blobs/sha256/$h"
  jq -cn --arg m "$2" --arg d "sha256:$h" --argjson s "$s" '{mediaType:$m,digest:$d,size:$s}'
}
cat >"$BUILD/nfd.yaml" <<'EOF'
version: v1alpha1
compatibilities:
- description: "saxpy is built for x86-64-v4"
  tag: avx512
  weight: 10
  rules:
  - name: "AVX-512"
    matchFeatures:
    - feature: cpu.cpuid
      matchExpressions:
        AVX512F: {op: Exists}
        AVX512VL: {op: Exists}
    - feature: kernel.version
      matchExpressions:
        major: {op: Gt, value: ["3"]}
EOF
printf '{}' >"$BUILD/empty.json"
spec=$(blob "$BUILD/nfd.yaml" application/vnd.nfd.image-compatibility.spec.v1alpha1+yaml)
empty=$(blob "$BUILD/empty.json" application/vnd.oci.empty.v1+json)
subject=$(jq -c '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="avx512") | {mediaType,digest,size}' "$L/index.json")
jq -cn --argjson c "$empty" --argjson l "$spec" --argjson s "$subject" \
  '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
    artifactType:"application/vnd.nfd.image-compatibility.v1alpha1",config:$c,layers:[$l],subject:$s}' \
  >"$BUILD/artifact.json"
art=$(blob "$BUILD/artifact.json" application/vnd.oci.image.manifest.v1+json)
jq --argjson a "$art" '.manifests += [$a + {artifactType:"application/vnd.nfd.image-compatibility.v1alpha1"}]' \
  "$L/index.json" >"$BUILD/index.json"
mv "$BUILD/index.json" "$L/index.json"

# The same images with other layer compressions (skopeo 1.9 reuses blobs
# and cannot recompress between OCI layouts): zstd and plain tar.
recompress() {  # TAG NEWTAG zstd|none
  local m cfg layers=() d new
  m=$(jq -c --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t)' "$L/index.json")
  d=$(jq -r .digest <<<"$m" | cut -d: -f2)
  for l in $(jq -r '.layers[].digest' "$L/blobs/sha256/$d" | cut -d: -f2); do
    if [ "$3" = zstd ]; then
      zcat "$L/blobs/sha256/$l" | zstd -q -19 -o "$BUILD/layer" -f
      layers+=("$(blob "$BUILD/layer" application/vnd.oci.image.layer.v1.tar+zstd)")
    else
      zcat "$L/blobs/sha256/$l" >"$BUILD/layer"
      layers+=("$(blob "$BUILD/layer" application/vnd.oci.image.layer.v1.tar)")
    fi
  done
  jq --argjson ls "$(printf '%s\n' "${layers[@]}" | jq -s .)" '.layers = $ls' "$L/blobs/sha256/$d" >"$BUILD/m.json"
  new=$(blob "$BUILD/m.json" application/vnd.oci.image.manifest.v1+json)
  jq --argjson n "$new" --arg t "$2" '.manifests += [$n + {annotations: {"org.opencontainers.image.ref.name": $t}}]' \
    "$L/index.json" >"$BUILD/index.json"
  mv "$BUILD/index.json" "$L/index.json"
}
recompress openmpi openmpi-zstd zstd
recompress plain plain-tar none

mv "$L" "$WORK/oci"
rm -rf "$R"
printf '%s\n' "$HASH" >"$WORK/.stamp"
log "tags: $(umoci ls --layout "$WORK/oci" | tr '\n' ' ')"
for t in openmpi openmpi-zstd plain-tar; do
  log "  $t layers: $(jq -r --arg t "$t" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$WORK/oci/index.json" \
    | cut -d: -f2 | xargs -I{} jq -r '[.layers[].mediaType] | join(",")' "$WORK/oci/blobs/sha256/{}")"
done
log "done in $(( $(date +%s) - t0 ))s under $WORK"
