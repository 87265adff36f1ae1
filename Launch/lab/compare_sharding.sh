#!/usr/bin/env bash
# The sharding figures of docs/results.md, one run at a time on 2 ranks (release build): peak RSS of each rank and median
# tokens/s (steps 2..4, rank 0's metrics.jsonl) for Configs/student-8x384.yaml and Configs/student-30x576.yaml with
# optimizer.sharding none, states and gradients (4 steps each); then each rank's peak RSS with the SmolLM2 teacher replicated vs
# pipelined (the 24-block cut recipe's distillation, Configs/recipes/smollm2-cut.yaml, 4 steps). About 20 minutes on 2 cores. Results in Checkpoints/sharding/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
d=.build/release/distill
data=Checkpoints/data/fortunes-smollm
teacher=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
out=Checkpoints/sharding
for f in "$d" "$teacher" "$data/train.bin"; do
    [ -e "$f" ] || { echo "compare_sharding: $f is missing; run Launch/quickstart.sh first" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out"
here=$(pwd)
# run NAME BASE_CONFIG YAML_OVERRIDES: one 2-rank run; prints "peak0 / peak1 | median tok/s"
run() {
    local name=$1 base=$2 extra=$3
    printf 'base: %s\n%s\ncheckpoint:\n  dir: %s\n' "$here/$base" "$extra" "$here/$out/$name" > "$out/$name.yaml"
    bash Launch/distill_mpi.sh 2 train --config "$out/$name.yaml" --sample-tokens 0 > "$out/$name.log" 2>&1 \
        || { echo "compare_sharding: $name failed (see $out/$name.log)" >&2; exit 1; }
    local peaks tps
    peaks=$(sed -n 's/.*peak RSS per rank (training): \([0-9 /]*\) MiB.*/\1/p' "$out/$name.log" | tail -1)
    tps=$(python3 -c "
import json, statistics, sys
r = [json.loads(l) for l in open(sys.argv[1]) if '\"train\"' in l]
print('%.0f' % statistics.median(x['tokens_per_s'] for x in r[1:]))" "$out/$name/metrics.jsonl")
    echo "$peaks | $tps"
}
{
    echo "| student | sharding | peak RSS rank 0 / rank 1 (MiB) | tokens/s (median) |"
    echo "|---|---|---|---|"
    for cfg in student-8x384 student-30x576; do
        for s in none states gradients; do
            r=$(run "$cfg-$s" "Configs/$cfg.yaml" "train:
  steps: 4
  eval_batches: 1
optimizer:
  sharding: $s")
            echo "| $cfg | $s | ${r%% | *} | ${r##* | } |"
        done
    done
    echo
    echo "| teacher placement (smollm2-cut distillation, 4 steps) | peak RSS rank 0 / rank 1 (MiB) | tokens/s (median) |"
    echo "|---|---|---|"
    for p in replicated pipelined; do
        r=$(run "teacher-$p" Configs/recipes/smollm2-cut.yaml "train:
  steps: 4
  eval_every: 0
  eval_batches: 1
teacher:
  placement: $p")
        echo "| $p | ${r%% | *} | ${r##* | } |"
    done
} | tee "$out/results.md"
