#!/usr/bin/env bash
# The newcomer's command on a fresh Debian machine: system packages, release build, the real teacher (SmolLM2-135M-
# Instruct GGUF, fetched once into Checkpoints/teachers/ and verified by hash), the corpus (Debian's fortunes,
# tokenized with the teacher's tokenizer, split train/validation) and a held-out book (Launch/fetch_heldout.sh), then
# the main job: Configs/recipes/quickstart.yaml on 2 ranks — every block of the teacher in IQ4_NL, the tied table too,
# its scales searched weighing each weight by its input channel's measured strength, healed for 24 steps of forward KL
# with QAT — with checkpoints in Checkpoints/quickstart/. Then the student is
# exported to GGUF, evaluated beside its teacher on held-out fortunes and on the book, both continue the same prompt,
# and an HTML report is written (Launch/recipe.sh quickstart; 32 windows of the book to stay within 10 minutes).
# Running it again resumes an unfinished run or reuses a finished one. Extra arguments go to `distill train`,
# e.g. Launch/quickstart.sh --steps 20
set -euo pipefail
cd "$(dirname "$0")/.."
BOOK_WINDOWS=${BOOK_WINDOWS:-32} exec bash Launch/recipe.sh quickstart "$@"
