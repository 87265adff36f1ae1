#!/usr/bin/env bash
# The cross-tokenizer comparison of docs/results.md: one random-init student with SmolLM2's tokenizer (Configs/cross/base.yaml)
# trained at equal steps and tokens with cross-entropy only, with SmolLM2 (same tokenizer, plain KL), with Gemma-3-270M
# (another tokenizer) through `uld` and `gold`, and with both teachers together; each final checkpoint is scored on the
# fortunes validation split and on a book it never saw, with SmolLM2 (the teacher that shares its tokens) beside it.
# Usage: Launch/lab/compare_cross_tokenizer.sh [VARIANT...]   (default: all; results in Checkpoints/cross/)
# Speed is measured apart, in one sitting after the trainings, one variant at a time: 12 steps of each (median
# tokens/s of steps 3–12), so the column compares like with like even if the trainings shared the machine.
# Needs the release build, both teachers (Launch/fetch_teacher.sh smollm2 gemma3) and the prepared corpus
# (Launch/quickstart.sh). Finished runs are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
source Launch/lab/compare_common.sh
out=Checkpoints/cross
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(ce smollm2 gemma-uld gemma-gold gemma-gold-buckets both-gold)
compare_require "$smollm" Checkpoints/teachers/gemma-3-270m-q4_k_m.gguf "$data/train.bin" "$book"
for v in "${variants[@]}"; do
    cfg=Configs/cross/$v.yaml
    [ -f "$cfg" ] || { echo "compare_cross_tokenizer: no $cfg (expected one of: $(ls Configs/cross | grep -v base | sed 's/.yaml//' | tr '\n' ' '))" >&2; exit 1; }
    final=$(compare_train "$v" "$cfg" "$out/$v")
    compare_score "$final"
done
for v in "${variants[@]}"; do
    [ -f "$out/speed/$v.log" ] && grep -q "^step    12/12" "$out/speed/$v.log" && continue
    echo "== $v: speed (12 steps)"
    rm -rf "$out/speed/$v"
    mkdir -p "$out/speed"
    DISTILL_BIN=$d bash Launch/distill_mpi.sh 2 train --config "Configs/cross/$v.yaml" --steps 12 --checkpoint-dir "$out/speed/$v" \
        --sample-tokens 0 > "$out/speed/$v.log" 2>&1 || { echo "compare_cross_tokenizer: speed run of $v failed (see $out/speed/$v.log)" >&2; exit 1; }
done
python3 - "$out" "${variants[@]}" <<'PY'
import json, os, re, statistics, sys
out, variants = sys.argv[1], sys.argv[2:]
lines = ["| variant | teacher(s) | validation NLL | held-out book NLL | top-1 agreement with SmolLM2 (book) | aligned / matched positions | tokens/s (median) | aligning per step | wall time |",
         "|---|---|---|---|---|---|---|---|---|"]
teacher = {}
for v in variants:
    d = os.path.join(out, v)
    final = sorted(c for c in os.listdir(d) if c.startswith("step_"))[-1]
    val = json.load(open(os.path.join(d, final, "val.json")))
    book = json.load(open(os.path.join(d, final, "book.json")))
    teacher = {"val": val["teacher_mean_nll"], "book": book["teacher_mean_nll"]}
    log = open(os.path.join(out, v + ".log")).read().splitlines()
    speed = open(os.path.join(out, "speed", v + ".log")).read().splitlines()
    recs = [json.loads(l) for l in open(os.path.join(out, "speed", v, "metrics.jsonl"))]
    toks = [r["tokens_per_s"] for r in recs if r.get("kind") == "train" and r["step"] >= 3]
    cross = next((l for l in speed if l.startswith("cross-tokenizer:")), "")
    shares = next((l for l in log if l.startswith("cross-tokenizer:")), "")
    m = re.search(r"([\d.]+)% of loss positions aligned, ([\d.]+)% matched", shares)
    a = re.search(r"aligning ([\d.]+) ms per step per rank \(([\d.]+)%", cross)
    cfg = open(f"Configs/cross/{v}.yaml").read()
    who = ", ".join(os.path.basename(p).split(".")[0].split("-q4")[0] for p in re.findall(r"path: (\S+)", cfg)) or "none (cross-entropy)"
    secs = open(os.path.join(out, v + ".seconds")).read().strip() if os.path.exists(os.path.join(out, v + ".seconds")) else "?"
    lines.append(f"| {v} | {who} | {val['mean_nll']:.3f} | {book['mean_nll']:.3f} | {100 * book['top1_agreement']:.1f}% | "
                 + (f"{m.group(1)}% / {m.group(2)}%" if m else "—") + f" | {statistics.median(toks) if toks else 0:.0f} | "
                 + (f"{a.group(1)} ms ({a.group(2)}%)" if a else "—") + f" | {secs} s |")
lines.append(f"\nSmolLM2-135M-Instruct (the teacher with the student's tokens) on the same windows: validation {teacher['val']:.3f}, book {teacher['book']:.3f}.")
text = "\n".join(lines)
open(os.path.join(out, "results.md"), "w").write(text + "\n")
print(text)
PY
