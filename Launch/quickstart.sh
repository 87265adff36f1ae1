#!/usr/bin/env bash
# The newcomer's command on a fresh Debian machine: system packages, release build, the real teacher (SmolLM2-135M-
# Instruct GGUF, fetched once into Checkpoints/teachers/ and verified by hash), the corpus (Debian's fortunes,
# tokenized with the teacher's tokenizer, split train/validation) and a held-out book (Launch/fetch_heldout.sh), then
# the main job: Configs/recipes/quickstart.yaml on 2 ranks — a 24-block student cut from the teacher by measured layer
# selection, healed with skew reverse KL and QAT Q8_0 — with checkpoints in Checkpoints/quickstart/. Then the student is
# exported to GGUF, evaluated beside its teacher on held-out fortunes and on the book, both continue the same prompt,
# and an HTML report is written.
# Running it again resumes an unfinished run or reuses a finished one. Extra arguments go to `distill train`,
# e.g. Launch/quickstart.sh --steps 20
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh
swift build -c release
teacher=$(bash Launch/fetch_teacher.sh)
book=$(bash Launch/fetch_heldout.sh)
d=.build/release/distill
run=Checkpoints/quickstart
data=Checkpoints/data/fortunes-smollm
if [ ! -s "$data/train.bin" ]; then
    echo "== preparing the corpus (distill prepare):"
    $d prepare /usr/share/games/fortunes --exclude-suffix .dat --exclude-suffix .u8 --separator % --tokenizer "$teacher" --output "$data"
fi
echo "== distilling on 2 ranks (Launch/distill-mpi.sh 2 train --config Configs/recipes/quickstart.yaml --resume auto):"
bash Launch/distill-mpi.sh 2 train --config Configs/recipes/quickstart.yaml --resume auto --sample-tokens 0 "$@"
latest=$run/$(cat $run/latest)
student=$run/student-q8_0.gguf
echo "== exporting the student (distill export $latest --format gguf):"
$d export "$latest" --format gguf --out "$student"
echo "== the student beside its teacher on held-out fortunes (distill eval):"
rm -f "$run/evaluation.jsonl"
$d eval --model "$student" --teacher "$teacher" --data "$data" --context 128 --max-windows 16 \
    --append-to "$run/evaluation.jsonl" --label "student, QAT Q8_0 GGUF, held-out fortunes"
echo "== the student beside its teacher on a book neither trained on (Botchan, distill eval --text):"
$d eval --model "$student" --teacher "$teacher" --text "$book" --context 128 --max-windows 32 \
    --append-to "$run/evaluation.jsonl" --label "student, QAT Q8_0 GGUF, held-out book"
# a plain continuation: the student learned from fortunes, not from chat transcripts
prompt="The secret of a happy life is"
sample=(--prompt "$prompt" --temperature 0.7 --top-k 40 --seed 1 --max-tokens 40)
echo "== the teacher continues \"$prompt\" (distill generate --temperature 0.7 --top-k 40):"
$d generate --model "$teacher" "${sample[@]}"
echo "== the student continues it (same sampling):"
$d generate --model "$student" "${sample[@]}"
$d report "$run" --title "distill quickstart: SmolLM2-135M-Instruct → 24-block QAT Q8_0 student"
echo "== done. Checkpoints, metrics.jsonl, TensorBoard events (tensorboard --logdir $run/tensorboard) and report.html are in $run/"
