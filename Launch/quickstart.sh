#!/usr/bin/env bash
# The newcomer's command: system packages, release build, the real teacher (SmolLM2-135M-Instruct GGUF, fetched
# once into Checkpoints/teachers/), and the main job on its embedded default (Configs/quickstart.yaml: a small
# Llama-style model trained on Debian's fortunes). Extra arguments go to `distill train`, e.g.
# Launch/quickstart.sh --steps 50
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh
swift build -c release
teacher=$(bash Launch/fetch_teacher.sh)
echo "== the teacher answers (distill generate --chat --greedy):"
.build/release/distill generate --model "$teacher" --prompt "Write a one-line fortune cookie message." --chat --greedy --max-tokens 40
echo "== training a student from scratch on fortunes (distill train):"
exec .build/release/distill train --config Configs/quickstart.yaml "$@"
