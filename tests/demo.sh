#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, as root, install
# what hpcc needs, build it, and launch real containers with runc through
# hpcc-runtime (and once through hpcc-hook): one refused (an A64FX image on
# this node), one tweaked (an MPICH image whose stand-in MPI is replaced by
# the host's MPICH).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "tests/demo.sh must run as root (it starts runc)"; exit 1; }

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "installing Debian packages (runc, crun, podman, umoci, MPICH, libfabric, Slurm, ...)"
bash tests/setup/install-deps.sh
say "building hpcc (release)"
cargo build --release -q
# hpcc-hook only ever comes out of the static build (cargo build gives none).
bash packaging/build-static-hook.sh target/static >/dev/null
install -m 0755 target/release/hpcc target/static/hpcc   # the hook's GPU helper, beside it
say "building fixtures: busybox and MPI images from real Debian packages, OCI layout with umoci"
bash tests/setup/build-fixtures.sh tests/work >/dev/null

HOOK=$PWD/target/static/hpcc-hook
RUNTIME=$PWD/target/release/hpcc-runtime
HPCC=$PWD/target/release/hpcc
DEMO=$PWD/tests/work/demo
rm -rf "$DEMO"; mkdir -p "$DEMO"
cat > "$DEMO/hook.toml" <<TOML
# The demo site's policy: offer the host's MPICH and libfabric to images.
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]

[libfabric]
library = "/usr/lib/x86_64-linux-gnu/libfabric.so.1"
providers = "/usr/lib/x86_64-linux-gnu/libfabric"

[cache]
dir = "$DEMO/cache"
TOML
export HPCC_CONFIG=$DEMO/hook.toml

say "hpcc fingerprint: what this node offers"
"$HPCC" fingerprint

say "hpcc-runtime in front of runc: an image labelled for Fujitsu A64FX (OCI layout built with umoci) is refused before it starts"
bash tests/setup/make-bundle.sh tests/work/oci:busybox-impossible "$DEMO/a64fx" >/dev/null
"$HPCC" match --bundle "$DEMO/a64fx" || true
set +e
"$RUNTIME" --hpcc-config="$DEMO/hook.toml" --hpcc-runtime=/usr/sbin/runc --root /run/hpcc-demo run --bundle "$DEMO/a64fx" demo-a64fx
echo "hpcc-runtime exit status: $?"
set -e
runc --root /run/hpcc-demo delete --force demo-a64fx 2>/dev/null || true

say "the same image with hpcc-hook as runc's prestart hook (sites with only hooks.d)"
HOOK=$HOOK bash tests/setup/make-bundle.sh tests/work/oci:busybox-impossible "$DEMO/a64fx-hook" >/dev/null
set +e
runc --root /run/hpcc-demo run --bundle "$DEMO/a64fx-hook" demo-a64fx-hook
echo "runc exit status: $?"
set -e
runc --root /run/hpcc-demo delete --force demo-a64fx-hook 2>/dev/null || true

say "hpcc-runtime: an MPICH image that allows mpi_replace gets the host's MPICH"
echo "without hpcc, the image's own (stand-in) MPI answers:"
chroot tests/work/rootfs/mpich-app /usr/bin/mpi-version | head -1
ARGS='["/usr/bin/mpi-version"]' bash tests/setup/make-bundle.sh tests/work/rootfs/mpich-app "$DEMO/mpich" \
  org.supercontainers.hardware.cpu.optimized.version=x86_64 \
  org.supercontainers.mpi.implementation=mpich \
  org.supercontainers.mpi.portability.mode=mpi_replace >/dev/null
"$HPCC" match --plan --bundle "$DEMO/mpich" || true
cp "$DEMO/mpich/config.json" "$DEMO/config.json.before"
echo "through hpcc-runtime, inside the container:"
"$RUNTIME" --hpcc-config="$DEMO/hook.toml" --hpcc-runtime=/usr/sbin/runc --root /run/hpcc-demo run --bundle "$DEMO/mpich" demo-mpich | head -3
# The plan went into hpcc-runtime's private bundle (docs/runtime.md): named by
# a hash of the container's state directory, under the policy's cache dir.
key=$(printf %s /run/hpcc-demo/demo-mpich | sha256sum | cut -c1-32)
echo "the plan, as config.json edits in hpcc-runtime's private bundle (mounts hpcc added):"
jq -c '.mounts[] | select(.options | index("rprivate")) | {source, destination}' "$DEMO/cache/bundles/$key/config.json" | head -4
cmp -s "$DEMO/config.json.before" "$DEMO/mpich/config.json" && echo "the bundle's own config.json is unchanged"
"$RUNTIME" --hpcc-config="$DEMO/hook.toml" --hpcc-runtime=/usr/sbin/runc --root /run/hpcc-demo delete --force demo-mpich 2>/dev/null || true
say "done: see docs/ for the policy, the annotations and each integration"
