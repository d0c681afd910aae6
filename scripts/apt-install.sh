#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs Debian packages non-interactively.
#
# Tries `apt-get install` first (fast when the package lists are fresh) and runs
# `apt-get update` only if that fails. Uses sudo only when not already root.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 64
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install $* with your system's package manager" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "installing $* needs root and sudo is not available; run as root:" >&2
        echo "    apt-get update && apt-get install -y $*" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get install -y -q "$@"; then
    echo "apt-get install failed; refreshing the package lists and trying again" >&2
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q "$@"
fi
