#!/usr/bin/env bash
# Installs the system packages distill needs, idempotently: apt-get update runs once, and only when something is
# missing. Used by quickstart.sh and test.sh; safe to run again.
set -euo pipefail
packages=(libopenmpi-dev openmpi-bin libopenblas-dev pkg-config fortunes fortunes-min "$@")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: expected a Swift 6 toolchain on PATH (swift), found none" >&2; exit 1; }
