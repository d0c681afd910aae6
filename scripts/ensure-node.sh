#!/usr/bin/env bash
# ensure-node.sh: makes sure node and npm are on PATH. The Node provider compatibility
# test (integration/tests/it/compat_node.rs) runs `npm ci` and node; Debian's nodejs is
# new enough (the pinned @openfeature/flagd-provider needs node >= 18).
set -euo pipefail

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    exit 0
fi
echo "node or npm is missing: installing nodejs and npm with apt-get"
"$(dirname "$0")/apt-install.sh" nodejs npm
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "node or npm still missing after installing nodejs and npm" >&2
    exit 1
}
