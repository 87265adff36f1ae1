#!/usr/bin/env bash
# The student comparison of docs/results.md ("Students"): the 24-block cut recipe (Configs/recipes/smollm2-cut.yaml, the quickstart until 2026-12-07: a 24-block
# cut of SmolLM2-135M-Instruct, greedy selection, skew reverse KL + CE, QAT Q8_0, 24 steps × 2 ranks × 4 × 128 tokens)
# and its variants in Configs/students/ (one change each), all at equal steps and tokens. Every run is exported to Q8_0
# GGUF (what ships; a name ending in -q4 exports Q4_0 throughout, the embedding too) and evaluated beside the teacher on held-out fortunes (validation split, 16 windows of 128) and on a
# book it never saw (Botchan, Launch/fetch_heldout.sh; 64 windows of 128 tokens).
# usage: Launch/lab/compare_students.sh [NAME...]   (default: every config in Configs/students/; finished runs are reused)
# Results: Checkpoints/students/results.md (one row per run, with the training time).
set -euo pipefail
cd "$(dirname "$0")/../.."
d=.build/release/distill
teacher=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
data=Checkpoints/data/fortunes-smollm
book=$(bash Launch/fetch_heldout.sh)
out=Checkpoints/students
for f in "$d" "$teacher" "$data/train.bin"; do
    [ -e "$f" ] || { echo "compare_students: $f is missing; run Launch/quickstart.sh first" >&2; exit 1; }
done
mkdir -p "$out"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=($(ls Configs/students | sed 's/\.yaml$//'))
ev() { $d eval --model "$1" --teacher "$teacher" "${@:2}" --context 128 --json 2>/dev/null; }
[ -s "$out/teacher.json" ] || echo "{\"val\": $(ev "$teacher" --data "$data" --max-windows 16), \"book\": $(ev "$teacher" --text "$book" --max-windows 64)}" > "$out/teacher.json"
for n in "${names[@]}"; do
    [ -s "$out/$n.json" ] && continue
    printf "base: %s\ncheckpoint:\n  dir: %s\n  every_minutes: 0\n" "$PWD/Configs/students/$n.yaml" "$out/$n" > "$out/$n.yaml"
    # the same teacher, depth and calibration windows measure the same selection: reuse the recipe's (the key is checked)
    mkdir -p "$out/$n"
    [ -f "$out/kd/selection.json" ] && [ ! -f "$out/$n/selection.json" ] && cp "$out/kd/selection.json" "$out/$n/"
    echo "== $n: training (Configs/students/$n.yaml)"
    s=$(date +%s)
    bash Launch/distill_mpi.sh 2 train --config "$out/$n.yaml" --resume auto --sample-tokens 0 > "$out/$n.log" 2>&1 || { echo "compare_students: $n failed (see $out/$n.log)" >&2; exit 1; }
    secs=$(( $(date +%s) - s ))
    last=$out/$n/$(cat "$out/$n/latest")
    q=q8_0; [[ $n == *-q4 ]] && q=q4_0
    $d export "$last" --format gguf --quant $q --embedding-quant $q --out "$out/$n.gguf" > /dev/null
    echo "{\"name\": \"$n\", \"quant\": \"$q\", \"seconds\": $secs, \"bytes\": $(stat -c %s "$out/$n.gguf"), \"blocks\": \"$(grep -o 'blocks \[[0-9, ]*\]' "$out/$n.log" | tail -1)\", \"val\": $(ev "$out/$n.gguf" --data "$data" --max-windows 16), \"book\": $(ev "$out/$n.gguf" --text "$book" --max-windows 64)}" > "$out/$n.json.partial"
    mv "$out/$n.json.partial" "$out/$n.json"
done
python3 - "$out" <<'PY' | tee "$out/results.md"
import json, os, sys
out = sys.argv[1]
t = json.load(open(f"{out}/teacher.json"))
print("| student (Configs/students/) | val NLL | val KL | val top-1 | book NLL | book KL | book top-1 | GGUF | tokens/s | train s |")
print("|---|---|---|---|---|---|---|---|---|---|")
print(f"| teacher (Q4_1 GGUF) | {t['val']['mean_nll']:.4f} | 0 | 100% | {t['book']['mean_nll']:.4f} | 0 | 100% | {t['val']['size_bytes']/1048576:.1f} MiB | {t['book']['tokens_per_s']:.0f} | |")
for f in sorted(os.listdir(out)):
    if not f.endswith(".json") or f == "teacher.json":
        continue
    j = json.load(open(f"{out}/{f}"))
    v, b = j["val"], j["book"]
    print(f"| {j['name']} | {v['mean_nll']:.4f} | {v['kl_teacher_model']:.4f} | {100*v['top1_agreement']:.1f}% | {b['mean_nll']:.4f} | "
          f"{b['kl_teacher_model']:.4f} | {100*b['top1_agreement']:.1f}% | {j['bytes']/1048576:.1f} MiB {j.get('quant', 'q8_0').upper()} | {b['tokens_per_s']:.0f} | {j['seconds']} |")
PY
