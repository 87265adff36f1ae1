#!/usr/bin/env bash
# The QAT comparison of docs/results.md: the same student cut from SmolLM2-135M-Instruct (Configs/qat/base.yaml) trained
# in full precision, with Q8_0 and Q4_0 fake quantization, and Q4_0 with learned scales; each exported to GGUF (the full-precision one after
# training, in each type: post-training quantization) and evaluated against the teacher on held-out fortunes.
# Runs that already finished are reused. Results in Checkpoints/qat/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
d=.build/release/distill
teacher=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
data=Checkpoints/data/fortunes-smollm
out=Checkpoints/qat
for f in "$d" "$teacher" "$data/train.bin"; do
    [ -e "$f" ] || { echo "compare_qat: $f is missing; run Launch/quickstart.sh first" >&2; exit 1; }
done
mkdir -p "$out"
for s in none q8_0 q4_0 q4_0_learned; do
    final=$out/$s/step_00000040
    if [ ! -f "$final/checksums.json" ]; then
        echo "== $s: training (Configs/qat/$s.yaml)"
        bash Launch/distill_mpi.sh 2 train --config Configs/qat/$s.yaml --resume auto --sample-tokens 0 2>&1 | tee "$out/$s.log" | grep -E "^step|error" || true
        [ -f "$final/checksums.json" ] || { echo "compare_qat: $s did not finish (see $out/$s.log)" >&2; exit 1; }
    fi
done
ev() { $d eval --model "$1" --teacher "$teacher" --data "$data" --context 128 --max-windows 16 --json; }
rows=()
row() {  # name, model, file for the size
    local j; j=$(ev "$2")
    rows+=("$1|$j|$(stat -c %s "$3")")
}
[ -f "$out/teacher.json" ] || ev "$teacher" > "$out/teacher.json"
rows+=("teacher SmolLM2-135M-Instruct (Q4_1 GGUF)|$(cat "$out/teacher.json")|$(stat -c %s "$teacher")")
$d export "$out/none/step_00000040" --format gguf --quant f16 --out "$out/none-f16.gguf"
row "student, full precision → F16 GGUF" "$out/none-f16.gguf" "$out/none-f16.gguf"
for s in q8_0 q4_0; do
    $d export "$out/none/step_00000040" --format gguf --quant $s --out "$out/none-$s.gguf"
    row "student, full precision → $s after training (PTQ)" "$out/none-$s.gguf" "$out/none-$s.gguf"
    $d export "$out/$s/step_00000040" --format gguf --out "$out/qat-$s.gguf"
    row "student, QAT $s → $s GGUF" "$out/qat-$s.gguf" "$out/qat-$s.gguf"
    ckj=$(ev "$out/$s/step_00000040")
    echo "QAT $s: checkpoint (fake quantization) $ckj"
done
$d export "$out/q4_0_learned/step_00000040" --format gguf --out "$out/qat-q4_0-learned.gguf"
row "student, QAT q4_0 with learned scales (LSQ) → q4_0 GGUF" "$out/qat-q4_0-learned.gguf" "$out/qat-q4_0-learned.gguf"
{
    echo "| model | size on disk | val NLL | KL(teacher‖model) | top-1 agreement |"
    echo "|---|---|---|---|---|"
    for r in "${rows[@]}"; do
        IFS='|' read -r name j size <<< "$r"
        python3 -c "import json,sys; j=json.loads(sys.argv[2]); print(f\"| {sys.argv[1]} | {int(sys.argv[3])/1048576:.1f} MiB | {j['mean_nll']:.4f} | {j.get('kl_teacher_model', 0):.4f} | {100*j.get('top1_agreement', 1):.1f}% |\")" "$name" "$j" "$size"
    done
} | tee "$out/results.md"
