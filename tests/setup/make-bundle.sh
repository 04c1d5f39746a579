#!/usr/bin/env bash
# make-bundle.sh ROOTFS_OR_IMAGE BUNDLE_DIR [KEY=VALUE ...]
#
# Creates an OCI runtime bundle for runc/crun/srun --container.
#   ROOTFS_OR_IMAGE  a rootfs directory (e.g. tests/work/rootfs/busybox), or an
#                    OCI image reference LAYOUT:TAG (e.g. tests/work/oci:busybox-x86_64),
#                    unpacked with `umoci unpack` (which turns image labels into
#                    config.json annotations).
#   BUNDLE_DIR       created; replaced if it already holds a bundle (config.json).
#   KEY=VALUE        added to config.json "annotations" (split at the first '=').
#
# Environment knobs:
#   ARGS='["/bin/sh","-c","echo hi"]'  process.args, a JSON array (this is the default)
#   ROOTFS_MODE=copy|ref   copy the rootfs into BUNDLE/rootfs (default; the hook
#                          may create mount targets in it, so fixtures stay clean),
#                          or ref: root.path = the rootfs's absolute path
#   READONLY=true|false    root.readonly (default: keep runc spec's value, true)
#   HOSTNET=1              drop the network namespace (share the host network)
#   HOOK=/abs/hpcc-hook    add a hook entry to hooks.$HOOK_STAGE
#   HOOK_STAGE=prestart    prestart | createRuntime | createContainer | startContainer | poststart | poststop
#   HOOK_ARGS='[]'         extra hook arguments, JSON array (argv[0] is HOOK)
#   HOOK_TIMEOUT=N         hook timeout in seconds
#   HPCC_CONFIG=/path      passed to the hook as --config=/path (hooks get only the
#                          entry's env, so PATH is set there too)
set -euo pipefail

log() { printf '[make-bundle] %s\n' "$*"; }
die() { printf '[make-bundle] error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 ROOTFS_OR_IMAGE BUNDLE_DIR [KEY=VALUE ...]"
src=$1 bundle=$2
shift 2
command -v jq >/dev/null || die "jq missing (run tests/setup/install-deps.sh)"

# Absolute paths: runtimes and Slurm resolve the bundle from other cwds.
abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
bundle=$(abspath "$bundle")

# Refuse to wipe anything that is not a bundle we (or umoci) made.
if [ -e "$bundle" ]; then
  if [ -f "$bundle/config.json" ] || [ -z "$(ls -A "$bundle")" ]; then
    log "replacing existing bundle $bundle"
    rm -rf "$bundle"
  else
    die "$bundle exists and is not a bundle (no config.json); not touching it"
  fi
fi
mkdir -p "$(dirname "$bundle")"

if [ -d "$src" ]; then
  rootfs=$(cd "$src" && pwd)
  mkdir -p "$bundle"
  log "runc spec in $bundle"
  runc spec --bundle "$bundle"
  case ${ROOTFS_MODE:-copy} in
    copy) log "copying rootfs $rootfs -> $bundle/rootfs"
          cp -a "$rootfs" "$bundle/rootfs"
          rootpath=rootfs ;;
    ref)  log "referencing rootfs $rootfs (root.path absolute)"
          rootpath=$rootfs ;;
    *) die "ROOTFS_MODE must be copy or ref" ;;
  esac
elif [ -f "${src%:*}/index.json" ] && [ "${src%:*}" != "$src" ]; then
  command -v umoci >/dev/null || die "umoci missing"
  log "umoci unpack --image $src $bundle"
  umoci unpack --image "$src" "$bundle" >/dev/null
  rootpath=$(jq -r '.root.path' "$bundle/config.json")
else
  die "$src is neither a rootfs directory nor an OCI image LAYOUT:TAG"
fi

# Annotations from KEY=VALUE arguments, as a JSON object.
ann='{}'
for kv in "$@"; do
  case $kv in *=*) ;; *) die "annotation '$kv' is not KEY=VALUE" ;; esac
  ann=$(jq -c --arg k "${kv%%=*}" --arg v "${kv#*=}" '. + {($k): $v}' <<<"$ann")
done

args=${ARGS:-'["/bin/sh","-c","echo hi"]'}
jq -e 'type == "array" and length > 0 and all(type == "string")' <<<"$args" >/dev/null \
  || die "ARGS must be a non-empty JSON array of strings: $args"

hook='null'
if [ -n "${HOOK:-}" ]; then
  case $HOOK in /*) ;; *) die "HOOK must be an absolute path" ;; esac
  [ -x "$HOOK" ] || log "warning: HOOK $HOOK is not an executable file (yet)"
  henv='["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]'
  extra=${HOOK_ARGS:-[]}
  # The hook reads its policy from its arguments, never from its environment.
  [ -n "${HPCC_CONFIG:-}" ] && extra=$(jq -c --arg c "--config=$HPCC_CONFIG" '. + [$c]' <<<"$extra")
  hook=$(jq -nc --arg p "$HOOK" --argjson extra "$extra" --argjson env "$henv" \
           --arg t "${HOOK_TIMEOUT:-}" \
           '{path: $p, args: ([$p] + $extra), env: $env}
            + (if $t == "" then {} else {timeout: ($t | tonumber)} end)')
fi

tmp=$(mktemp "$bundle/.config.XXXXXX")
# terminal:false so it runs without a tty (CI, srun); no rlimits: crun cannot
# raise them here (ENVIRONMENT.md).
jq --argjson args "$args" --arg root "$rootpath" --argjson ann "$ann" \
   --argjson hook "$hook" --arg stage "${HOOK_STAGE:-prestart}" \
   --arg ro "${READONLY:-}" --arg hostnet "${HOSTNET:-}" '
  .process.args = $args
  | .process.terminal = false
  | del(.process.rlimits)
  | .root.path = $root
  | (if $ro == "" then . else .root.readonly = ($ro == "true" or $ro == "1") end)
  | (if $hostnet == "1" then .linux.namespaces |= map(select(.type != "network")) else . end)
  | .annotations = ((.annotations // {}) + $ann)
  | (if $hook == null then . else .hooks[$stage] = ((.hooks[$stage] // []) + [$hook]) end)
' "$bundle/config.json" >"$tmp"
mv "$tmp" "$bundle/config.json"
# Slurm's stepd and the hook must be able to read it.
chmod 755 "$bundle"; chmod 644 "$bundle/config.json"

log "bundle $bundle: $(jq -c '{args: .process.args, root: .root, annotations: (.annotations // {} | with_entries(select(.key | startswith("org.opencontainers") | not))), hooks: (.hooks // {})}' "$bundle/config.json")"
