#!/usr/bin/env bash
# The memory table of a large teacher: a synthetic teacher of SmolLM2-1.7B's shape (24 × 2048, FFN 8192, F16, tied,
# 3.19 GiB; Launch/synthetic_teacher.py writes it once) distilled into a small student for 2 steps, replicated and
# pipelined on 2 and 4 ranks (oversubscribed is fine: memory, not speed). Per rank: the plan's total, the measured peak
# RSS and peak address space (the run's "peak RSS per rank" line), and the teacher's share of the file.
#   usage: Launch/lab/memory_table.sh [OUT_DIR]      (PRESET=llama-3b TYPE=Q8_0 RANKS="2 4" PLACEMENTS="...")
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
out=${1:-$here/Checkpoints/bench/memory-$(date +%Y%m%d-%H%M%S)}
preset=${PRESET:-smollm2-1.7b}
type=${TYPE:-F16}
mkdir -p "$out"
teacher=${TEACHER:-$out/../synthetic-$preset-$type.gguf}
[ -f "$teacher" ] || python3 "$here/Launch/synthetic_teacher.py" --preset "$preset" --type "$type" --tied --out "$teacher"
data=$out/data
[ -d "$data" ] || "$here/.build/release/distill" prepare "$here/Tests/KDTrainTests/Fixtures/fortunes-sample.txt" --output "$data" \
    --tokenizer "$here/Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf" --separator % --val-fraction 0.1 >/dev/null
file_mib=$(( $(stat -c %s "$teacher") / 1048576 ))
echo "| placement | ranks | planned per rank (MiB) | peak RSS per rank (MiB) | peak address space per rank (MiB) | teacher share per rank (MiB of $file_mib) |"
echo "|---|---|---|---|---|---|"
for placement in ${PLACEMENTS:-replicated pipelined}; do
    for ranks in ${RANKS:-2 4}; do
        name=$placement-$ranks
        cat > "$out/$name.yaml" <<EOF
model: {layers: 2, dim: 256, heads: 4, kv_heads: 2, ffn_dim: 688, vocab_size: 49152, max_seq_len: 128}
train: {steps: 2, micro_batch: 2, seq_len: 128, log_every: 1}
optimizer: {warmup_steps: 1}
data: {train: [$data]}
teacher:
  path: $teacher
  placement: $placement
checkpoint: {dir: $out/$name, every: 2}
EOF
        "$here/Launch/distill_mpi.sh" "$ranks" train --config "$out/$name.yaml" --sample-tokens 0 > "$out/$name.log" 2>&1 || { echo "| $placement | $ranks | failed: see $out/$name.log |"; continue; }
        line=$(grep "peak RSS per rank (training)" "$out/$name.log" | tail -1)
        rss=$(sed -n 's/.*(training): \([0-9 /]*\) MiB; planned.*/\1/p' <<< "$line")
        plan=$(sed -n 's/.*planned \([0-9 /]*\) MiB; peak address.*/\1/p' <<< "$line")
        vm=$(sed -n 's/.*peak address space \([0-9 /]*\) MiB, at the end \([0-9 /]*\) MiB.*/\1 (end: \2)/p' <<< "$line")
        share=$("$here/.build/release/distill" train --config "$out/$name.yaml" --dry-run --ranks "$ranks" 2>/dev/null \
                | sed -n 's/^#   teacher 1 weights *\([0-9.]*\) MiB.*/\1/p' | tr '\n' '/' | sed 's|/$||; s|/| / |g')
        echo "| $placement | $ranks | $plan | $rss | $vm | $share |"
    done
done
