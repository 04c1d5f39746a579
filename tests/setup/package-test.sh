#!/usr/bin/env bash
# tests/setup/package-test.sh [DEB_DIR] — the packages as an admin gets them:
#   1. dpkg -i hpcc and hpcc-slurm (DEB_DIR, default target/packages); check the
#      installed files, `hpcc --version`, the man pages;
#   2. an upgrade (the same packages as revision +1) keeps an edited conffile;
#   3. Slurm with the shipped plugstack.conf/oci.conf snippets, then the examples
#      of every integration page (tests/setup/doc-examples.py): runc, crun, podman
#      with the shipped hooks.d file, image builders, CRI-O/containerd (syntax);
#   4. `hpcc doctor` green (exit 0, "healthy": true);
#   5. dpkg -r: nothing left but the conffile; dpkg --purge: nothing at all.
# DOC_VERBOSE=1 prints every example's output. Must run as root, on a machine with tests/setup/install-deps.sh's packages and
# the fixtures (tests/setup/build-fixtures.sh tests/work). It changes the machine
# while it runs (packages, /etc/slurm, podman images) and restores it at the end:
# run it under `flock /tmp/hpcc-e2e.lock` where other tests share the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DEBS=${1:-target/packages}
log() { printf '[package-test] %s\n' "$*"; }
die() { printf '[package-test] FAIL: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

HPCC_DEB=$(ls "$DEBS"/hpcc_*.deb 2>/dev/null | head -1)
SLURM_DEB=$(ls "$DEBS"/hpcc-slurm_*.deb 2>/dev/null | head -1)
[ -f "$HPCC_DEB" ] && [ -f "$SLURM_DEB" ] || die "no hpcc_*.deb and hpcc-slurm_*.deb in $DEBS (packaging/make-packages.sh)"

# Test-only tools: buildah (image-builders page), python3 with yaml (doc harness).
need=()
for p in buildah python3 python3-yaml; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  log "apt-get install ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
[ -x tests/work/rootfs/busybox/bin/sh ] || bash tests/setup/build-fixtures.sh tests/work >/dev/null

SAVE=$(mktemp -d /tmp/hpcc-package-test.XXXXXX)
slurm_started=0
restore() {
  local rc=$?
  set +e
  log "restoring the machine"
  [ "$slurm_started" = 1 ] && bash tests/setup/slurm.sh stop >/dev/null 2>&1
  for f in plugstack.conf oci.conf; do
    if [ -e "$SAVE/$f" ]; then cp -p "$SAVE/$f" "/etc/slurm/$f"; else rm -f "/etc/slurm/$f"; fi
  done
  rm -f /etc/slurm/plugstack.conf.d/hpcc.conf
  rmdir /etc/slurm/plugstack.conf.d 2>/dev/null
  for p in hpcc-slurm hpcc; do
    dpkg-query -W "$p" >/dev/null 2>&1 && dpkg --purge "$p" >/dev/null 2>&1
  done
  if [ -d "$SAVE/etc-hpcc" ]; then rm -rf /etc/hpcc; cp -a "$SAVE/etc-hpcc" /etc/hpcc; fi
  rm -rf "$SAVE"
  exit "$rc"
}
trap restore EXIT
for f in plugstack.conf oci.conf; do [ -e "/etc/slurm/$f" ] && cp -p "/etc/slurm/$f" "$SAVE/$f"; done
for p in hpcc-slurm hpcc; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qv "not-installed"; then
    log "purging an earlier $p"; dpkg --purge "$p" >/dev/null
  fi
done
# An /etc/hpcc that no package owns (a source install) is set aside, not lost.
[ -d /etc/hpcc ] && { cp -a /etc/hpcc "$SAVE/etc-hpcc"; rm -rf /etc/hpcc; }

t0=$SECONDS
# ---- 1. install ---------------------------------------------------------------
log "dpkg -i $(basename "$HPCC_DEB") $(basename "$SLURM_DEB")"
dpkg -i "$HPCC_DEB" "$SLURM_DEB" >/dev/null
dpkg -L hpcc hpcc-slurm | sort -u >"$SAVE/files"
for f in /usr/bin/hpcc /usr/libexec/hpcc/hpcc-hook /usr/libexec/hpcc/hpcc-runtime \
         /etc/hpcc/hook.toml /usr/share/containers/oci/hooks.d/hpcc.json \
         /usr/lib/x86_64-linux-gnu/slurm-wlm/hpcc_spank.so \
         /usr/share/doc/hpcc-slurm/examples/plugstack.conf /usr/share/doc/hpcc-slurm/examples/oci.conf \
         /usr/share/doc/hpcc-slurm/examples/cli_filter.lua /usr/libexec/hpcc/hpcc-node-features \
         /usr/lib/systemd/system/hpcc-node-features.service /usr/lib/systemd/system/hpcc-cdi-refresh.service \
         /usr/share/man/man1/hpcc.1.gz /usr/share/man/man1/hpcc-doctor.1.gz \
         /usr/share/man/man8/hpcc-hook.8.gz /usr/share/man/man8/hpcc-runtime.8.gz \
         /usr/share/man/man5/hook.toml.5.gz /usr/share/bash-completion/completions/hpcc; do
  [ -e "$f" ] || die "$f is not installed"
done
grep -qx /etc/hpcc/hook.toml /var/lib/dpkg/info/hpcc.conffiles || die "/etc/hpcc/hook.toml is not a conffile"
# The installed hook is the static one (no loader for an image's LD_PRELOAD).
readelf -lW /usr/libexec/hpcc/hpcc-hook | grep -q INTERP && die "the installed hpcc-hook is dynamically linked"
# So is the runtime (no loader in front of every container start).
readelf -lW /usr/libexec/hpcc/hpcc-runtime | grep -q INTERP && die "the installed hpcc-runtime is dynamically linked"
jq -e '.hook.timeout > 0' /usr/share/containers/oci/hooks.d/hpcc.json >/dev/null || die "hooks.d file has no timeout"
v=$(hpcc --version)
log "hpcc --version: $v"
case $v in *"built for Slurm 22.05."*) ;; *) die "hpcc --version does not name the Slurm release: $v" ;; esac
dpkg-deb -f "$SLURM_DEB" Depends | grep -q "slurmd (<< 22.06)" || die "hpcc-slurm does not pin its Slurm series"
for page in hpcc.1 hpcc-hook.8 hpcc-runtime.8 hook.toml.5; do
  zcat "/usr/share/man/man${page##*.}/$page.gz" | grep -q "^\.TH" || die "man page $page is not roff"
  command -v groff >/dev/null || continue
  zcat "/usr/share/man/man${page##*.}/$page.gz" | groff -man -Tutf8 -z -ww 2>"$SAVE/groff" || true
  grep -v "cannot adjust line" "$SAVE/groff" | grep . && die "man page $page has roff warnings"
done
bash -n /usr/share/bash-completion/completions/hpcc || die "bash completion does not parse"
systemd-analyze verify /usr/lib/systemd/system/hpcc-cdi-refresh.service 2>"$SAVE/unit" ||
  { cat "$SAVE/unit" >&2; die "hpcc-cdi-refresh.service does not verify"; }
# What the unit runs at boot: the node's CDI specs, 0644 root's, in /run/cdi.
hpcc cdi generate --output-dir /var/run/cdi >/dev/null || die "hpcc cdi generate failed"
for f in /run/cdi/hpcc.io-*.json; do
  [ -f "$f" ] || continue
  [ "$(stat -c '%a %U' "$f")" = "644 root" ] || die "$f is not 0644 root's"
  jq -e '.cdiVersion and .kind and (.devices | length > 0)' "$f" >/dev/null || die "$f is not a CDI spec"
done
hpcc --json nonsense >"$SAVE/err.json" && die "hpcc --json nonsense exited 0"
jq -e .error "$SAVE/err.json" >/dev/null || die "hpcc --json does not print its error as JSON"

# ---- 2. upgrade keeps the edited conffile -------------------------------------
echo "# edited by the admin (package-test)" >>/etc/hpcc/hook.toml
for d in "$HPCC_DEB" "$SLURM_DEB"; do
  rm -rf "$SAVE/repack"; dpkg-deb -R "$d" "$SAVE/repack"
  ver=$(dpkg-deb -f "$d" Version)
  sed -i "s/^Version: .*/Version: ${ver%-*}-$(( ${ver##*-} + 1 ))/" "$SAVE/repack/DEBIAN/control"
  sed -i "s/hpcc (= $ver)/hpcc (= ${ver%-*}-$(( ${ver##*-} + 1 )))/" "$SAVE/repack/DEBIAN/control"
  dpkg-deb -b "$SAVE/repack" "$SAVE/$(basename "${d%.deb}")-next.deb" >/dev/null
done
dpkg -i --force-confold "$SAVE"/hpcc_*-next.deb "$SAVE"/hpcc-slurm_*-next.deb >/dev/null
grep -q "edited by the admin" /etc/hpcc/hook.toml || die "the upgrade replaced the edited /etc/hpcc/hook.toml"
log "upgrade to $(dpkg-query -W -f='${Version}' hpcc) kept the edited conffile"

# ---- 3. Slurm with the shipped snippets, then every integration page -----------
# A fresh node: no plugin but the package's (the saved files come back at the end).
mkdir -p /etc/slurm; : >/etc/slurm/plugstack.conf; rm -f /etc/slurm/oci.conf
if bash tests/setup/slurm.sh status >/dev/null 2>&1; then
  log "Slurm already running: using it"
else
  bash tests/setup/slurm.sh start >/dev/null; slurm_started=1
fi
python3 tests/setup/doc-examples.py ${DOC_VERBOSE:+-v} --work "$SAVE/docs" \
  docs/slurm.md docs/runc-crun.md docs/podman.md docs/image-builders.md \
  docs/cri-o-kubernetes.md docs/containerd.md

# ---- 4. hpcc doctor green ------------------------------------------------------
hpcc doctor >"$SAVE/doctor.txt" || { cat "$SAVE/doctor.txt"; die "hpcc doctor is not green"; }
hpcc doctor --json >"$SAVE/doctor.json" || die "hpcc doctor --json exited non-zero"
jq -e '.healthy == true and .counts.fail == 0' "$SAVE/doctor.json" >/dev/null || die "hpcc doctor --json is not healthy"
for c in policy host-libraries hooks.d slurm fingerprint-cache dry-run; do
  jq -e --arg c "$c" '[.findings[] | select(.check == $c and .status == "ok")] | length > 0' "$SAVE/doctor.json" >/dev/null ||
    die "hpcc doctor checked nothing ok for $c"
done
log "hpcc doctor: $(tail -1 "$SAVE/doctor.txt")"

# ---- 5. remove: only the conffile stays; purge: nothing -------------------------
[ "$slurm_started" = 1 ] && { bash tests/setup/slurm.sh stop >/dev/null; slurm_started=0; }
dpkg -r hpcc-slurm hpcc >/dev/null
left=()
while read -r f; do
  [ "$f" = /etc/hpcc/hook.toml ] || [ "$f" = /etc/hpcc ] && continue
  if [ -f "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
  if [ -d "$f" ] && [ -z "$(ls -A "$f")" ] && ! dpkg -S "$f" >/dev/null 2>&1; then left+=("$f/"); fi
done <"$SAVE/files"
[ -e /run/hpcc ] && left+=(/run/hpcc)
for f in /run/cdi/hpcc.io-*.json; do if [ -e "$f" ]; then left+=("$f"); fi; done
[ "${#left[@]}" -eq 0 ] || die "left after dpkg -r: ${left[*]}"
[ -f /etc/hpcc/hook.toml ] || die "dpkg -r removed the conffile"
dpkg-query -W -f='${Status}\n' hpcc | grep -q "config-files" || die "hpcc is not in config-files state"
dpkg --purge hpcc-slurm hpcc >/dev/null
[ ! -e /etc/hpcc ] || die "dpkg --purge left /etc/hpcc"
log "removed: only /etc/hpcc/hook.toml stayed; purged: nothing left"
log "passed in $((SECONDS - t0)) s"
