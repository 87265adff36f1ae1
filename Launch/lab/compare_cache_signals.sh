#!/usr/bin/env bash
# Offline teacher signals at equal bytes per token: the live teacher (full distribution), top-k caches (compact 4-byte
# entries: k = 15 → 64 B/token, k = 63 → 256 B/token) and sampled caches (15 or 63 tokens drawn per position, same
# bytes), each training the same random-init 8 × 256 student (Configs/cross/smollm2.yaml's shape and schedule, forward
# KL, kd_ratio 0.5, 120 steps × 2 ranks × 2 × 128 tokens) with two seeds; every final checkpoint scored on the corpus'
# validation split and on a book it never saw, with the teacher beside it. The corpus is a ~700 KB slice of the
# fortunes (so that each cache is written in about a minute); results in Checkpoints/cache-signals/results.md.
# Needs the release build, the SmolLM2 teacher and Botchan (Launch/fetch_teacher.sh, Launch/fetch_heldout.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source Launch/lab/compare_common.sh
out=Checkpoints/cache-signals
data=Checkpoints/data/fortunes-smollm-slice
compare_require "$smollm" "$book"
mkdir -p "$out"
if [ ! -f "$data/train.bin" ]; then
    slice=$out/slice-text
    rm -rf "$slice" && mkdir -p "$slice"
    for f in fortunes humorists computers science wisdom people education; do cp "/usr/share/games/fortunes/$f" "$slice/"; done
    $d prepare "$slice" --separator % --tokenizer "$smollm" --output "$data" >&2
fi
config() {  # config NAME TEACHER_LINES: the student, schedule and objective of Configs/cross, with this teacher
    cat > "$out/$1.yaml" <<EOF
model: {layers: 8, dim: 256, heads: 4, head_dim: 64, kv_heads: 2, ffn_dim: 768, vocab_size: 49152, max_seq_len: 128, rope_theta: 100000, rope_style: adjacent}
student: {init: random}
train: {steps: 120, micro_batch: 2, seq_len: 128, log_every: 10, eval_every: 60, eval_batches: 4}
optimizer: {lr: 2.0e-3, warmup_steps: 10}
data: {train: [$data]}
teacher: {$2}
distill: {objective: fkl, kd_ratio: 0.5}
checkpoint: {dir: $out/$1, every: 60, keep: 2}
EOF
    echo "$out/$1.yaml"
}
live=$(config live "path: $smollm")
variants=(live)
for spec in topk:15 topk:63 sampled:15 sampled:63; do
    signal=${spec%%:*} k=${spec##*:} name=${spec/:/-}
    cache=$out/cache-$name
    if [ ! -f "$cache/cache.json" ]; then
        echo "== writing the $name cache" >&2
        args=(--signal "$signal"); [ "$signal" = topk ] && args+=(--top-k "$k") || args+=(--samples "$k")
        DISTILL_BIN=$d bash Launch/distill_mpi.sh 2 teacher-cache --config "$live" --out "$cache" "${args[@]}" > "$cache.log" 2>&1
    fi
    config "$name" "cache: $cache" > /dev/null
    variants+=("$name")
done
for v in "${variants[@]}"; do
    for seed in 1 2; do
        final=$(compare_train "$v seed $seed" "$out/$v.yaml" "$out/$v-s$seed" --seed "$seed")
        compare_score "$final"
    done
done
python3 - "$out" "${variants[@]}" <<'PY'
import json, os, re, statistics, sys
out, variants = sys.argv[1], sys.argv[2:]
lines = ["| teacher signal | bytes/token | validation NLL (seed 1 / 2, mean) | book NLL (seed 1 / 2, mean) | top-1 agreement (book, mean) | cache written in |",
         "|---|---|---|---|---|---|"]
for v in variants:
    vals, books, agree = [], [], []
    for seed in (1, 2):
        d = os.path.join(out, f"{v}-s{seed}")
        final = sorted(f for f in os.listdir(d) if f.startswith("step_"))[-1]
        val, book = (json.load(open(os.path.join(d, final, f))) for f in ("val.json", "book.json"))
        vals.append(val["mean_nll"]); books.append(book["mean_nll"]); agree.append(book["top1_agreement"])
    if v == "live":
        size, took = "196,608 (full rows, in memory)", "–"
    else:
        log = open(os.path.join(out, f"cache-{v}.log")).read()
        m = re.search(r"(\d+) B/token, ([0-9.]+) MiB\) in ([0-9.]+) s", log)
        size, took = (m.group(1), f"{float(m.group(3)):.0f} s ({m.group(2)} MiB)") if m else ("?", "?")
    f = lambda xs: f"{xs[0]:.4f} / {xs[1]:.4f}, **{statistics.mean(xs):.4f}**"
    lines.append(f"| {v} | {size} | {f(vals)} | {f(books)} | {100 * statistics.mean(agree):.1f}% | {took} |")
lines.append(f"\nTeacher (SmolLM2-135M-Instruct) on the same windows: validation {val['teacher_mean_nll']:.3f}, book {book['teacher_mean_nll']:.3f}.")
text = "\n".join(lines)
open(os.path.join(out, "results.md"), "w").write(text + "\n")
print(text)
PY
