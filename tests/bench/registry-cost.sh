#!/usr/bin/env bash
# registry-cost.sh [N]   (default N=20; root: it makes a network namespace)
#
# What scoring an image in a registry costs, against skopeo in the same
# run: Debian's docker-registry (distribution 2.8) on 127.0.0.1:5000 in a
# private network namespace, TLS from a throw-away CA, htpasswd auth, the
# busybox fixture (tests/work/oci:busybox-x86_64) pushed with skopeo. Runs
# interleaved, N of each:
#   match      hpcc match docker://...            (index, manifest, config, referrers; no layer)
#   inspect    skopeo inspect docker://...        (manifest and config)
#   raw        skopeo inspect --raw docker://...  (the manifest alone)
#   annotate   hpcc annotate --pull-layers ...    (+ the layer, streamed, verified, scanned)
#   copy       skopeo copy docker://... oci:DIR   (+ the layer, written to a layout)
# Prints the median wall time of each in ms and the ratios to skopeo.
# HPCC: the hpcc binary (default target/release/hpcc, else target/debug/hpcc).
set -euo pipefail
N=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
HPCC=${HPCC:-$root/target/release/hpcc}
[ -x "$HPCC" ] || HPCC=$root/target/debug/hpcc
[ -x "$HPCC" ] || { echo "no hpcc binary: cargo build --release -p hpcc-cli" >&2; exit 2; }
for t in ip docker-registry skopeo openssl htpasswd timeout; do
  command -v "$t" >/dev/null || { echo "missing: $t (tests/setup/install-deps.sh)" >&2; exit 2; }
done
FIX=$root/tests/work/oci
[ -f "$FIX/index.json" ] || { echo "no fixture $FIX (tests/setup/build-fixtures.sh tests/work)" >&2; exit 2; }

ns=hpcc-bench-reg-$$
dir=$(mktemp -d /tmp/hpcc-registry-cost.XXXXXX)
reg=
cleanup() {
  [ -n "$reg" ] && kill "$reg" 2>/dev/null && wait "$reg" 2>/dev/null
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out server.crt 2>/dev/null
mkdir certs && cp ca.crt certs/
htpasswd -Bbn bench bench-pw > htpasswd
cat > config.yml <<EOF
version: 0.1
log: {level: error, formatter: text, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/data}}
http: {addr: 127.0.0.1:5000, tls: {certificate: $dir/server.crt, key: $dir/server.key}}
auth: {htpasswd: {realm: bench, path: $dir/htpasswd}}
EOF
in_ns timeout 3600 docker-registry serve config.yml >registry.log 2>&1 &
reg=$!
for _ in $(seq 100); do in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break; sleep 0.1; done
printf '{"auths":{"127.0.0.1:5000":{"auth":"%s"}}}\n' "$(printf bench:bench-pw | base64)" > auth.json
in_ns timeout 120 skopeo copy -q --dest-authfile auth.json --dest-cert-dir certs \
  "oci:$FIX:busybox-x86_64" docker://127.0.0.1:5000/bench/busybox:x86_64
img=docker://127.0.0.1:5000/bench/busybox:x86_64
: > empty-policy.toml

run() { # NAME CMD...: one timed run, appended to NAME.ms
  local name=$1; shift
  local t0 t1 rc=0
  t0=$(date +%s%N)
  in_ns timeout 120 "$@" >/dev/null 2>"$name.err" || rc=$?
  t1=$(date +%s%N)
  # hpcc match exits 0/1/2 for green/orange/red: only 3 is a failure.
  if [ "$rc" -ne 0 ] && { [ "$name" != match ] || [ "$rc" -ge 3 ]; }; then
    echo "$name failed ($rc): $(cat "$name.err")" >&2; exit 1
  fi
  echo $(( (t1 - t0) / 1000 )) >> "$name.ms"
}
export HPCC_CONFIG=$dir/empty-policy.toml
for i in $(seq "$N"); do
  run match "$HPCC" match --authfile auth.json --ca-file ca.crt "$img"
  run inspect skopeo inspect --authfile auth.json --cert-dir certs "$img"
  run raw skopeo inspect --raw --authfile auth.json --cert-dir certs "$img"
  run annotate "$HPCC" annotate --pull-layers --format plain --authfile auth.json --ca-file ca.crt "$img"
  rm -rf "out-$i"
  run copy skopeo copy -q --authfile auth.json --src-cert-dir certs "$img" "oci:out-$i:x"
  rm -rf "out-$i"
done
median() { sort -n "$1.ms" | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }
layer=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="busybox-x86_64") | .digest' "$FIX/index.json")
lsize=$(jq -r '.layers[0].size' "$FIX/blobs/sha256/${layer#sha256:}")
echo "hpcc: $HPCC; N=$N interleaved; layer $lsize bytes; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
m=$(median match); i=$(median inspect); r=$(median raw); a=$(median annotate); c=$(median copy)
printf '%-10s %9s ms\n' match "$m" inspect "$i" raw "$r" annotate "$a" copy "$c"
awk -v m="$m" -v i="$i" -v r="$r" -v a="$a" -v c="$c" 'BEGIN {
  printf "match/inspect %.2f  match/raw %.2f  annotate/copy %.2f  annotate/match %.2f\n", m/i, m/r, a/c, a/m }'
