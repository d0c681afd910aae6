#!/usr/bin/env bash
# ensure-python-venv.sh: makes sure `python3 -m venv` can create a virtual environment
# with pip (Debian ships venv's ensurepip in a separate package, python3-venv). The Python
# provider compatibility test creates such a venv.
set -euo pipefail

probe() {
    command -v python3 >/dev/null 2>&1 || return 1
    local dir
    dir=$(mktemp -d)
    if python3 -m venv "$dir/venv" >/dev/null 2>&1; then
        rm -rf "$dir"
        return 0
    fi
    rm -rf "$dir"
    return 1
}

if probe; then
    exit 0
fi
echo "python3 -m venv does not work here: installing python3 and python3-venv with apt-get"
"$(dirname "$0")/apt-install.sh" python3 python3-venv
probe || {
    echo "python3 -m venv still fails after installing python3-venv" >&2
    exit 1
}
