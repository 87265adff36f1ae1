#!/usr/bin/env bash
# The newcomer's command: system packages, release build, and the main job on its embedded default
# (Configs/quickstart.yaml: a small Llama-style model trained on Debian's fortunes). Extra arguments go to
# `distill train`, e.g. Launch/quickstart.sh --steps 50
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh
swift build -c release
exec .build/release/distill train --config Configs/quickstart.yaml "$@"
