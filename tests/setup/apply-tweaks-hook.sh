#!/bin/sh
# apply-tweaks-hook.sh HPCC_HOOK TWEAKS_JSON REPLY_FILE [LD_CACHE_FILE]
#
# Test-only OCI prestart hook: applies a hand-written plan.Tweaks (JSON file)
# to the starting container through hpcc-hook's apply helper
# (`hpcc-hook --hpcc-apply-child`), exactly as hpcc-hook does after a start
# decision, but without the planner. Lets the e2e tests prove the apply layer
# with real runc/crun (namespace at prestart, rootfs path, device cgroup)
# independently of what the planner decides. Writes the helper's JSON reply
# to REPLY_FILE; exits non-zero (the runtime then stops) unless applied.
# LD_CACHE_FILE: a linker cache (glibc's format) to bind over the container's
# /etc/ld.so.cache, as hpcc-hook does with the one it writes.
set -eu
hook=$1 tweaks=$2 reply=$3 cache=${4:-}
state=$(cat)
pid=$(printf '%s' "$state" | jq -r .pid)
bundle=$(printf '%s' "$state" | jq -r .bundle)
root=$(jq -r '.root.path // "rootfs"' "$bundle/config.json")
case $root in /*) ;; *) root=$bundle/$root ;; esac
jq -n --slurpfile t "$tweaks" --arg r "$root" --argjson p "$pid" --arg c "$cache" \
  '{tweaks: $t[0], target: {rootfs: $r, pid: $p, ld_cache: (if $c == "" then null else $c end)}}' \
  | "$hook" --hpcc-apply-child >"$reply"
grep -q '"Applied"' "$reply" || { cat "$reply" >&2; exit 1; }
