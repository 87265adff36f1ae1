#!/usr/bin/env bash
# f32 against bf16 matmuls (train.precision) at equal steps and tokens: the cross-tokenizer comparison's SmolLM2 run
# (Configs/cross/smollm2.yaml: a random-init 8 × 256 student with SmolLM2's vocabulary, SmolLM2 teaching, 2 ranks,
# 120 steps) trained once per precision; each final checkpoint scored on the fortunes validation split and on a
# book it never saw, with the teacher beside it. Results in Checkpoints/precision/results.md.
# On a CPU without AVX512-BF16, bf16 falls back to f32 unless DISTILL_BF16_KERNEL=rounded (bf16's numbers through
# f32 sgemm: the quality comparison holds, the speed column does not measure the bf16 kernel). The table names the
# kernel that ran. Needs the release build, the SmolLM2 teacher and the prepared corpus (Launch/quickstart.sh,
# Launch/fetch_heldout.sh). Finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
source Launch/lab/compare_common.sh
cfg=Configs/cross/smollm2.yaml
out=Checkpoints/precision
compare_require "$smollm" "$data/train.bin" "$book"
for p in f32 bf16; do
    final=$(compare_train "$p" "$cfg" "$out/$p" --precision "$p")
    compare_score "$final"
done
steps=$(basename "$final" | sed 's/step_0*//')
python3 - "$out" "$steps" <<'PY'
import json, os, re, statistics, sys
out, steps = sys.argv[1], int(sys.argv[2])
lines = ["| precision | kernel | validation NLL | held-out book NLL | top-1 agreement with the teacher (book) | tokens/s (median, steps ≥ 3) |",
         "|---|---|---|---|---|---|"]
for p in ("f32", "bf16"):
    final = os.path.join(out, p, f"step_{steps:08d}")
    val, book = (json.load(open(os.path.join(final, f))) for f in ("val.json", "book.json"))
    log = open(os.path.join(out, p + ".log")).read()
    k = re.search(r"bf16 matmuls \((\w+) kernel\)", log)
    kernel = k.group(1) if k else ("f32 (fallback: " + ("forced" if "DISTILL_BF16_KERNEL=off" in log else "no AVX512-BF16") + ")" if "warning: train.precision bf16" in log else "sgemm")
    recs = [json.loads(l) for l in open(os.path.join(out, p, "metrics.jsonl"))]
    toks = [r["tokens_per_s"] for r in recs if r.get("kind") == "train" and r["step"] >= 3]
    lines.append(f"| {p} | {kernel} | {val['mean_nll']:.4f} | {book['mean_nll']:.4f} | {100 * book['top1_agreement']:.1f}% | {statistics.median(toks):.0f} |")
lines.append(f"\nTeacher (SmolLM2-135M-Instruct) on the same windows: validation {val['teacher_mean_nll']:.3f}, book {book['teacher_mean_nll']:.3f}.")
text = "\n".join(lines)
open(os.path.join(out, "results.md"), "w").write(text + "\n")
print(text)
PY
