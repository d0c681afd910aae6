#!/usr/bin/env bash
# ensure-redis.sh: makes sure redis-server and redis-cli are on PATH, installing the
# Debian package redis-server if they are not. The tests and `make run` start their own
# throw-away servers on free ports; nothing here starts or uses a Redis on 6379.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    exit 0
fi
echo "redis-server is not installed: installing it with apt-get (package redis-server)"
"$(dirname "$0")/apt-install.sh" redis-server
command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server is still not on PATH after installing the package" >&2
    exit 1
}
