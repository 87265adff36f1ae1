#!/usr/bin/env bash
# Installs the system packages distill needs, idempotently: apt-get update runs once, and only when something is
# missing. Used by quickstart.sh and (with --tests: the references the test suite checks against) test.sh; safe to
# run again.
set -euo pipefail
tests=0
[ "${1:-}" = "--tests" ] && { tests=1; shift; }
packages=(libopenmpi-dev openmpi-bin libopenblas-dev pkg-config fortunes fortunes-min "$@")
# the report test renders the HTML report in a headless Chromium
((tests)) && packages+=(chromium)
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
# Independent references (llama.cpp's gguf-py, Hugging Face safetensors and tokenizers, numpy; TensorBoard's event
# reader for the tests). The quickstart uses gguf and numpy to check the teacher.
modules="gguf, numpy, safetensors, tokenizers"
pips=("gguf==0.19.0" numpy "safetensors==0.8.0" "tokenizers==0.23.3")
((tests)) && { modules+=", tensorboard"; pips+=("tensorboard==2.21.0"); }
if ! python3 -c "import $modules" 2>/dev/null; then
    echo "setup: installing Python references ($modules)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pips[@]}"
fi
command -v swift >/dev/null || { echo "setup: expected a Swift 6 toolchain on PATH (swift), found none" >&2; exit 1; }
