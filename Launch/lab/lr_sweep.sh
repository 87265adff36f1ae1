#!/usr/bin/env bash
# A short learning-rate sweep of a recipe: STEPS steps (its warmup and cosine schedule squeezed into them) at each LR on
# 2 ranks, exported in the type it trained for and read beside the teacher on Botchan and the news (64 windows of 128
# tokens, as Launch/recipe.sh reads them). Runs, logs and `distill eval --json` results go to OUT (default
# Checkpoints/sweep): OUT/RECIPE-lrLR-sSTEPS{,.log,.seconds,.book.json,.news.json}; a finished point is reused.
# usage: Launch/lab/lr_sweep.sh RECIPE STEPS LR…     e.g. Launch/lab/lr_sweep.sh smollm2-62mib-stack 100 1e-3 5e-4 2e-4
set -euo pipefail
cd "$(dirname "$0")/../.."
source Launch/lab/compare_common.sh
usage="usage: Launch/lab/lr_sweep.sh RECIPE STEPS LR…"
recipe=${1:?$usage}; steps=${2:?$usage}; shift 2
[ $# -gt 0 ] || { echo "$usage" >&2; exit 1; }
config=$PWD/Configs/recipes/$recipe.yaml
[ -f "$config" ] || { echo "lr_sweep.sh: expected a recipe in Configs/recipes/, found no $config" >&2; exit 1; }
compare_require
out=${OUT:-Checkpoints/sweep}
mkdir -p "$out"
teacher=$($d train --config "$config" --dry-run | awk '/^teacher:/ { c = 1 } c && /^  path:/ { print $2; exit }')
book=$(bash Launch/fetch_heldout.sh botchan)
news=$(bash Launch/fetch_heldout.sh news)
for lr in "$@"; do
    run=$out/$recipe-lr$lr-s$steps
    printf 'base: %s\ntrain:\n  steps: %s\noptimizer:\n  lr: %s\n' "$config" "$steps" "$lr" > "$run.yaml"
    final=$(compare_train "lr $lr" "$run.yaml" "$run")
    $d export "$final" --format gguf --out "$run/student.gguf" > /dev/null   # the type its QAT trained for
    for text in book news; do
        path=$book; [ $text = news ] && path=$news
        $d eval --model "$run/student.gguf" --teacher "$teacher" --text "$path" --context 128 --max-windows 64 --json > "$run.$text.json"
    done
    python3 - "$lr" "$(cat "$run.seconds")" "$run" <<'PY'
import json, sys
lr, seconds, run = sys.argv[1:]
row = [f"lr {lr}"]
for text in ("book", "news"):
    j = json.load(open(f"{run}.{text}.json"))
    row.append(f"{text} {j['mean_nll']:.4f} ({j['mean_nll'] - j['teacher_mean_nll']:+.3f}, KL {j['kl_teacher_model']:.3f})")
print(" | ".join(row) + f" | {seconds} s of training")
PY
done
