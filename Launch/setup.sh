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
# The tests' independent references (llama.cpp's gguf-py, Hugging Face safetensors and tokenizers, numpy).
if ! python3 -c "import gguf, numpy, safetensors, tokenizers" 2>/dev/null; then
    echo "setup: installing Python test references (gguf, numpy, safetensors, tokenizers)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        "gguf==0.19.0" numpy "safetensors==0.8.0" "tokenizers==0.23.3"
fi
command -v swift >/dev/null || { echo "setup: expected a Swift 6 toolchain on PATH (swift), found none" >&2; exit 1; }
