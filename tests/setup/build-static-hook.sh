#!/usr/bin/env bash
# The static hook's build moved to packaging/build-static-hook.sh (the only
# way to build hpcc-hook); this path keeps working for scripts that use it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../../packaging/build-static-hook.sh" "$@"
