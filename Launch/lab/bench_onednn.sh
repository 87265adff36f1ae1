#!/usr/bin/env bash
# The bf16 GEMM choice, measured: oneDNN's matmul (Debian's libdnnl-dev) beside distill's own gemm on the same
# shapes, f32 and bf16, interleaved over ROUNDS rounds (default 3) in one sitting; prints the median GFLOP/s of each.
# Shapes (default): 2048³ and the linear layers of the student-8x384 training step at 8 × 256 tokens (q/k/v/o 384²,
# SwiGLU up 1024 × 384 and down, the LM head 49152 × 384), as C[M,N] = A[M,K] · B[N,K]ᵀ.
# Usage: Launch/lab/bench_onednn.sh [MxNxK ...]; THREADS (default 2). Needs the release build. Run it alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${THREADS:-2}
rounds=${ROUNDS:-3}
d=${DISTILL_BIN:-.build/release/distill}
[ -x "$d" ] || { echo "bench_onednn: expected $d (swift build -c release), found none" >&2; exit 1; }
shapes=("$@")
[ ${#shapes[@]} -eq 0 ] && shapes=(2048x2048x2048 2048x384x384 2048x1024x384 2048x384x1024 2048x49152x384)
bash Launch/setup.sh libdnnl-dev
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 Launch/lab/onednn_matmul.c -ldnnl -o "$work/onednn_matmul"
for r in $(seq "$rounds"); do
    OMP_NUM_THREADS=$threads "$work/onednn_matmul" "${shapes[@]}" >> "$work/onednn.txt"
    "$d" bench --gemm "$(IFS=,; echo "${shapes[*]}")" --threads "$threads" --precision f32,bf16 --repeats 5 --json >> "$work/distill.jsonl"
    echo "round $r done" >&2
done
python3 - "$work" "$threads" "${shapes[@]}" <<'PY'
import json, re, statistics, sys
work, threads, shapes = sys.argv[1], sys.argv[2], sys.argv[3:]
ours, theirs, version = {}, {}, "?"
for l in open(f"{work}/distill.jsonl"):
    r = json.loads(l)
    ours.setdefault((r["gemm"], r["precision"].split("-")[0]), []).append(r["gflops"])
for l in open(f"{work}/onednn.txt"):
    if l.startswith("oneDNN "): version = l.split()[1]; continue
    m = re.match(r"onednn (\S+) (\w+) \| (?:([\d.]+) GFLOP/s.*\| (\S+)|(no implementation.*))", l.strip())
    if m: theirs.setdefault((m.group(1), m.group(2)), []).append(float(m.group(3)) if m.group(3) else m.group(5))
def cell(v):
    if not v: return "not measured (no AVX512-BF16)"
    if isinstance(v[0], str): return v[0]
    return f"{statistics.median(v):.1f}"
print(f"| shape M×N×K | distill f32 | oneDNN {version} f32 | distill bf16 | oneDNN bf16 |")
print("|---|---|---|---|---|")
for s in shapes:
    print(f"| {s} | {cell(ours.get((s, 'f32')))} | {cell(theirs.get((s, 'f32')))} | {cell(ours.get((s, 'bf16')))} | {cell(theirs.get((s, 'bf16')))} |")
print(f"(GFLOP/s, median of the rounds, each the best of 5 calls; {threads} threads)")
PY
