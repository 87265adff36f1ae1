#!/usr/bin/env bash
# The newcomer's command on a fresh Debian machine: system packages, release build, the real teacher (SmolLM2-135M-
# Instruct GGUF, fetched once into Checkpoints/teachers/), the corpus (Debian's fortunes, tokenized with the teacher's
# tokenizer), then the main job: a short distributed distillation on 2 ranks (Configs/quickstart.yaml), checkpoints
# in Checkpoints/quickstart/, and a comparison of the student with its teacher. Extra arguments go to
# `distill train`, e.g. Launch/quickstart.sh --steps 10
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh
swift build -c release
teacher=$(bash Launch/fetch_teacher.sh)
d=.build/release/distill
echo "== the teacher answers (distill generate --chat --greedy):"
$d generate --model "$teacher" --prompt "Write a one-line fortune cookie message." --chat --greedy --max-tokens 40
data=Checkpoints/data/fortunes-smollm
if [ ! -s "$data/train.bin" ]; then
    echo "== preparing the corpus (distill prepare):"
    $d prepare /usr/share/games/fortunes --exclude-suffix .dat --exclude-suffix .u8 --separator % --tokenizer "$teacher" --output "$data"
fi
echo "== distilling on 2 ranks (Launch/distill-mpi.sh 2 train --config Configs/quickstart.yaml):"
bash Launch/distill-mpi.sh 2 train --config Configs/quickstart.yaml "$@"
latest=Checkpoints/quickstart/$(cat Checkpoints/quickstart/latest)
echo "== the student against its teacher on held-out fortunes (distill eval):"
$d eval --model "$latest" --teacher "$teacher" --data "$data" --context 128 --max-windows 8
