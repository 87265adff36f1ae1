#!/usr/bin/env bash
# A recipe of Configs/recipes/ end to end on a fresh Debian machine: system packages, release build, the real teacher
# the recipe names (SmolLM2-135M-Instruct or Gemma-3-270M GGUF, fetched once into Checkpoints/teachers/ and verified by
# hash), the corpus (Debian's fortunes, or for a data folder named mix-…, books-…, books-teacher-… or teacher-… that corpus of Launch/fetch_corpus.sh,
# tokenized with the teacher's tokenizer into the recipe's data folder) and a held-out book (Launch/fetch_heldout.sh);
# then the recipe on 2 ranks with checkpoints in its checkpoint.dir; then the student is exported to GGUF in the type it
# trained for (its QAT scheme; Q8_0 without QAT), its bytes set against the teacher's f16 bytes, evaluated beside its
# teacher on the corpus's held-out split, on the book and on news (Launch/fetch_heldout.sh), both continue the same prompt, and an HTML report is written.
# Running it again resumes an unfinished run or reuses a finished one. Extra arguments go to `distill train`.
# usage: Launch/recipe.sh NAME [train arguments]   (NAME: quickstart, smollm2-hour, … — a file in Configs/recipes/)
# env: BOOK_WINDOWS (default 64) windows of 128 tokens of the book to evaluate on
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: Launch/recipe.sh NAME [train arguments] (NAME: a file in Configs/recipes/)}
shift
config=Configs/recipes/$name.yaml
[ -f "$config" ] || { echo "recipe.sh: expected a recipe in Configs/recipes/ ($(ls Configs/recipes | sed 's/\.yaml$//' | tr '\n' ' ')), found no $config" >&2; exit 1; }
bash Launch/setup.sh
swift build -c release
d=.build/release/distill
# the teacher, corpus, run directory and export type, as the recipe (with its bases) resolves them
resolved=$($d train --config "$config" --dry-run "$@")
teacher=$(awk '/^teacher:/ { c = 1 } c && /^  path:/ { print $2; exit }' <<< "$resolved")
data=$(awk '/^data:/ { c = 1 } c && /^  - / { print $2; exit }' <<< "$resolved")
case "$teacher" in
    */gemma-3-270m-q4_k_m.gguf) bash Launch/fetch_teacher.sh gemma3 > /dev/null ;;
    *) bash Launch/fetch_teacher.sh > /dev/null ;;
esac
book=$(bash Launch/fetch_heldout.sh)
if [ ! -s "$data/train.bin" ]; then
    # a folder named mix-…, books-…, books-teacher-… (books+teacher) or teacher-… is that corpus of Launch/fetch_corpus.sh, any other the fortunes
    corpus=fortunes
    case "$(basename "$data")" in mix-*) corpus=mix ;; books-teacher-*) corpus=books+teacher ;; teacher-*) corpus=teacher ;; books-*) corpus=books ;; esac
    echo "== preparing the corpus (Launch/fetch_corpus.sh $corpus: distill prepare, $teacher's tokenizer):"
    bash Launch/fetch_corpus.sh "$corpus" "$teacher" "$data" > /dev/null
fi
run=$(awk '/^checkpoint:/ { c = 1 } c && /^  dir:/ { print $2; exit }' <<< "$resolved")
quant=$(awk '/^qat:/ { c = 1 } c && /^  scheme:/ { print $2; exit }' <<< "$resolved")
case "$quant" in none|"") quant=q8_0 ;; esac
# a student trained for one of llama.cpp's presets (qat.preset) exports each tensor in that preset's type
preset=$(awk '/^[a-z]/ { c = /^qat:/ } c && /^  preset:/ { print $2; exit }' <<< "$resolved")
[ -n "$preset" ] && quant=$preset
label=$(tr '[:lower:]' '[:upper:]' <<< "$quant")
echo "== distilling on 2 ranks (Launch/distill_mpi.sh 2 train --config $config --resume auto):"
start=$(date +%s)
bash Launch/distill_mpi.sh 2 train --config "$config" --resume auto --sample-tokens 0 "$@"
echo "== training took $(( $(date +%s) - start )) s here (a finished run is reused: then only the check)"
latest=$run/$(cat "$run/latest")
student=$run/student-$quant.gguf
echo "== exporting the student (distill export $latest --format gguf --quant $quant):"
$d export "$latest" --format gguf --quant "$quant" --out "$student"
python3 - "$teacher" "$student" <<'PY'
import os, sys, gguf
f16 = 2 * sum(int(t.n_elements) for t in gguf.GGUFReader(sys.argv[1]).tensors)
size = os.path.getsize(sys.argv[2])
print(f"== the student's GGUF: {size / 2**20:.1f} MiB = {100 * size / f16:.1f}% of the teacher's f16 bytes ({f16 / 2**20:.1f} MiB)")
PY
heldout="held-out fortunes"
case "$(basename "$data")" in mix-*|books-*|teacher-*) heldout="the corpus's validation split" ;; esac
echo "== the student beside its teacher on $heldout (distill eval):"
rm -f "$run/evaluation.jsonl"
$d eval --model "$student" --teacher "$teacher" --data "$data" --context 128 --max-windows 16 \
    --append-to "$run/evaluation.jsonl" --label "student, $label GGUF, $heldout"
echo "== the student beside its teacher on a book neither trained on (Botchan, distill eval --text):"
$d eval --model "$student" --teacher "$teacher" --text "$book" --context 128 --max-windows "${BOOK_WINDOWS:-64}" \
    --append-to "$run/evaluation.jsonl" --label "student, $label GGUF, held-out book"
echo "== the student beside its teacher on news neither trained on (the Lee corpus, distill eval --text):"
$d eval --model "$student" --teacher "$teacher" --text "$(bash Launch/fetch_heldout.sh news)" --context 128 --max-windows "${BOOK_WINDOWS:-64}" \
    --append-to "$run/evaluation.jsonl" --label "student, $label GGUF, held-out news"
# a plain continuation: the student learned from fortunes, not from chat transcripts
prompt="The secret of a happy life is"
sample=(--prompt "$prompt" --temperature 0.7 --top-k 40 --seed 1 --max-tokens 40)
echo "== the teacher continues \"$prompt\" (distill generate --temperature 0.7 --top-k 40):"
$d generate --model "$teacher" "${sample[@]}"
echo "== the student continues it (same sampling):"
$d generate --model "$student" "${sample[@]}"
$d report "$run" --title "distill recipe $name: SmolLM2-135M-Instruct → $label student"
echo "== done. Checkpoints, metrics.jsonl, TensorBoard events (tensorboard --logdir $run/tensorboard) and report.html are in $run/"
