#!/usr/bin/env bash
# A short learning-rate sweep of a recipe: STEPS steps (its warmup and cosine schedule squeezed into them) at each LR on
# 2 ranks, exported in the recipe's QAT type and read beside the teacher on Botchan and the news (64 windows of 128
# tokens, as Launch/recipe.sh reads them). Runs, logs and `distill eval --json` results go to OUT (default
# Checkpoints/sweep): OUT/NAME-lrLR-sSTEPS{,.train.log,.book.json,.news.json}; a finished point is reused.
# usage: Launch/lab/lr_sweep.sh RECIPE STEPS LR…     e.g. Launch/lab/lr_sweep.sh smollm2-62mib-stack 100 1e-3 5e-4 2e-4
set -euo pipefail
cd "$(dirname "$0")/../.."
usage="usage: Launch/lab/lr_sweep.sh RECIPE STEPS LR…"
recipe=${1:?$usage}; steps=${2:?$usage}; shift 2
[ $# -gt 0 ] || { echo "$usage" >&2; exit 1; }
config=$PWD/Configs/recipes/$recipe.yaml
[ -f "$config" ] || { echo "lr_sweep.sh: expected a recipe in Configs/recipes/, found no $config" >&2; exit 1; }
d=.build/release/distill
out=${OUT:-Checkpoints/sweep}
mkdir -p "$out"
resolved=$($d train --config "$config" --dry-run)
teacher=$(awk '/^teacher:/ { c = 1 } c && /^  path:/ { print $2; exit }' <<< "$resolved")
quant=$(awk '/^qat:/ { c = 1 } c && /^  scheme:/ { print $2; exit }' <<< "$resolved")
case "$quant" in none|"") quant=q8_0 ;; esac
book=$(bash Launch/fetch_heldout.sh botchan)
news=$(bash Launch/fetch_heldout.sh news)
for lr in "$@"; do
    run=$out/$recipe-lr$lr-s$steps
    printf 'base: %s\ntrain:\n  steps: %s\noptimizer:\n  lr: %s\ncheckpoint:\n  dir: %s\n' "$config" "$steps" "$lr" "$run" > "$run.yaml"
    start=$(date +%s)
    bash Launch/distill_mpi.sh 2 train --config "$run.yaml" --resume auto --sample-tokens 0 > "$run.train.log" 2>&1 ||
        { echo "lr_sweep.sh: training at lr $lr failed (see $run.train.log)" >&2; exit 1; }
    $d export "$run/$(cat "$run/latest")" --format gguf --quant "$quant" --out "$run/student.gguf" > /dev/null
    for text in book news; do
        path=$book; [ $text = news ] && path=$news
        $d eval --model "$run/student.gguf" --teacher "$teacher" --text "$path" --context 128 --max-windows 64 --json > "$run.$text.json"
    done
    python3 - "$lr" "$(( $(date +%s) - start ))" "$run" <<'PY'
import json, sys
lr, seconds, run = sys.argv[1:]
row = [f"lr {lr}"]
for text in ("book", "news"):
    j = json.load(open(f"{run}.{text}.json"))
    row.append(f"{text} {j['mean_nll']:.4f} ({j['mean_nll'] - j['teacher_mean_nll']:+.3f}, KL {j['kl_teacher_model']:.3f})")
print(" | ".join(row) + f" | {seconds} s")
PY
done
