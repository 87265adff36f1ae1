#!/usr/bin/env bash
# Speed side by side with the PyTorch peer, in one sitting, interleaved: `distill bench` (release build) and
# ../shared/peers/torch_kd_step.py (eager and torch.compile), preset A (teacher of SmolLM2-135M's shape, student
# 8 × 384, batch 8 × 256), 2 threads, ROUNDS rounds (default 3); prints the median tokens/s and peak RSS of each.
# PRECISIONS (default f32,bf16) are distill's precisions; bf16 is skipped with a warning on a CPU without AVX512-BF16.
# Needs the peer's venv (bash ../shared/peers/setup_torch_venv.sh; PEER_PY overrides its python). Run it alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-3}
precisions=${PRECISIONS:-f32,bf16}
py=${PEER_PY:-/tmp/torchpeer/venv/bin/python}
peer=${PEER_DIR:-../shared/peers}
d=.build/release/distill
[ -x "$py" ] || { echo "bench_vs_peer: expected the peer's python at $py (bash $peer/setup_torch_venv.sh), found none" >&2; exit 1; }
[ -x "$d" ] || { echo "bench_vs_peer: expected $d (swift build -c release), found none" >&2; exit 1; }
out=Checkpoints/bench/sitting-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
for r in $(seq "$rounds"); do
    for pair in "kd kd student-8x384" "train student student-8x384" "forward teacher smollm2-135m"; do
        read -r ours theirs shape <<< "$pair"
        $d bench --shape "$shape" --mode "$ours" --threads 2 --precision "$precisions" --json >> "$out/distill.jsonl"
        "$py" "$peer/torch_kd_step.py" --preset A --mode "$theirs" --threads 2 --json-out "$out/torch.jsonl" >/dev/null
        "$py" "$peer/torch_kd_step.py" --preset A --mode "$theirs" --threads 2 --compile --json-out "$out/torch.jsonl" >/dev/null
        echo "round $r: $ours done"
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
ours = [json.loads(l) for l in open(f"{out}/distill.jsonl")]
theirs = [json.loads(l) for l in open(f"{out}/torch.jsonl")]
rows = [("full KD step (teacher fwd + student step)", "kd", "kd"), ("student step (8 × 384, vocab 49152)", "train", "student"),
        ("teacher forward (SmolLM2-135M shape)", "forward", "teacher")]
print("| | distill | PyTorch eager | PyTorch torch.compile | distill / eager | distill / compile |")
print("|---|---|---|---|---|---|")
precisions = sorted({r.get("precision", "f32") for r in ours})
for name, om, tm in rows:
    e = [r for r in theirs if r["mode"] == tm and not r["compile"]]
    c = [r for r in theirs if r["mode"] == tm and r["compile"]]
    me, mc = (statistics.median(x["tokens_per_s"] if "tokens_per_s" in x else x["tokens_per_s_median"] for x in xs) for xs in (e, c))
    re_, rc = (max(x["peak_rss_gib"] for x in xs) for xs in (e, c))
    for p in precisions:
        o = [r for r in ours if r["mode"] == om and r.get("precision", "f32") == p]
        mo, ro = statistics.median(x["tokens_per_s"] for x in o), max(x["peak_rss_bytes"] for x in o) / 2**30
        print(f"| {name}, distill {p} | {mo:.0f} tok/s, {ro:.2f} GiB | {me:.0f}, {re_:.2f} GiB | {mc:.0f}, {rc:.2f} GiB | {mo/me:.2f}× | {mo/mc:.2f}× |")
print(f"(medians of {len(e)} runs each; PyTorch in f32; raw lines in {out})")
PY
