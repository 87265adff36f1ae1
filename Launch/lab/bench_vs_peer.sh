#!/usr/bin/env bash
# Speed side by side with the PyTorch peer, in one sitting, interleaved: `distill bench` (release build) in each of
# PRECISIONS (default f32,bf16; bf16 is skipped with a warning on a CPU without AVX512-BF16) and
# ../shared/peers/torch_kd_step.py eager and torch.compile, each in f32 and in bf16 autocast (AMPS, default "off bf16"),
# preset A (teacher of SmolLM2-135M's shape, student 8 × 384, batch 8 × 256), 2 threads, ROUNDS rounds (default 3);
# MODES (default "kd train forward") picks the comparisons. TEACHER_TYPE (e.g. q4_1): the KD step also with its teacher in
# GGUF blocks of that type (`distill bench --teacher-type`, in bf16: the 8-bit products where the CPU has AVX512-VNNI),
# as a user's teacher file is held — PyTorch has no such teacher, so its rows stay the dense bf16/f32 ones; with
# TEACHER_PRODUCTS (auto, int8, float: `--teacher-products`, teacher.products) how its blocks multiply (int8: in f32 too).
# BF16_PRODUCTS (e.g. "vdpbf16ps fma"): the bf16 rows once per way the AVX512-BF16 kernel forms its products
# (DISTILL_BF16_PRODUCTS; the same bits, different speeds by CPU); unset: the CPU's default. Prints median tokens/s, peak RSS and the ratios against
# every PyTorch variant, and which of them is the fastest. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for
# every command (a user's machine does not set them). Needs the peer's venv (bash ../shared/peers/setup_torch_venv.sh;
# PEER_PY overrides its python). Run it alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-3}
precisions=${PRECISIONS:-f32,bf16}
amps=${AMPS:-off bf16}
modes=${MODES:-kd train forward}
py=${PEER_PY:-/tmp/torchpeer/venv/bin/python}
peer=${PEER_DIR:-../shared/peers}
d=.build/release/distill
[ -x "$py" ] || { echo "bench_vs_peer: expected the peer's python at $py (bash $peer/setup_torch_venv.sh), found none" >&2; exit 1; }
[ -x "$d" ] || { echo "bench_vs_peer: expected $d (swift build -c release), found none" >&2; exit 1; }
out=Checkpoints/bench/sitting-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
# distill bench in every precision of $precisions (its other arguments given), bf16 once per product of BF16_PRODUCTS,
# each in its own process: a measurement's peak RSS is then its own, not raised by what an earlier precision left
# resident (preset A's KD step: bf16 after f32 in one process read 1,593 MiB against 1,492 alone, f32 after bf16 1,783
# against 1,704)
bench() {
    local p q
    for p in ${precisions//,/ }; do
        if [ "$p" = bf16 ] && [ -n "${BF16_PRODUCTS:-}" ]; then
            for q in $BF16_PRODUCTS; do run env DISTILL_BF16_PRODUCTS="$q" $d bench --precision bf16 "$@"; done
        else
            run $d bench --precision "$p" "$@"
        fi
    done
}
for r in $(seq "$rounds"); do
    for pair in "kd kd student-8x384" "train student student-8x384" "forward teacher smollm2-135m"; do
        read -r ours theirs shape <<< "$pair"
        [[ " $modes " == *" $ours "* ]] || continue
        bench --shape "$shape" --mode "$ours" --threads 2 --json >> "$out/distill.jsonl"
        if [ "$ours" = kd ] && [ -n "${TEACHER_TYPE:-}" ]; then
            products=${TEACHER_PRODUCTS:-auto}
            bench --shape "$shape" --mode kd --threads 2 --teacher-type "$TEACHER_TYPE" --teacher-products "$products" --json \
                | sed "s/^{/{\"teacher_type\":\"$TEACHER_TYPE\",\"teacher_products\":\"$products\",/" >> "$out/distill.jsonl"
        fi
        for amp in $amps; do
            run "$py" "$peer/torch_kd_step.py" --preset A --mode "$theirs" --threads 2 --amp "$amp" --json-out "$out/torch.jsonl" >/dev/null
            run "$py" "$peer/torch_kd_step.py" --preset A --mode "$theirs" --threads 2 --amp "$amp" --compile --json-out "$out/torch.jsonl" >/dev/null
        done
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
tps = lambda x: x["tokens_per_s"] if "tokens_per_s" in x else x["tokens_per_s_median"]
for name, om, tm in rows:
    o_all = [r for r in ours if r["mode"] == om]
    if not o_all:
        continue
    peers = {}
    for r in theirs:
        if r["mode"] == tm:
            peers.setdefault(("torch.compile" if r["compile"] else "eager") + (" bf16 autocast" if r.get("amp") == "bf16" else " f32"), []).append(r)
    peer_med = {k: (statistics.median(tps(x) for x in v), max(x["peak_rss_gib"] for x in v), len(v)) for k, v in peers.items()}
    best = max(peer_med, key=lambda k: peer_med[k][0])
    print(f"\n{name}")
    print("| | tokens/s | peak RSS | " + " | ".join(f"/ {k}" for k in sorted(peer_med)) + " |")
    print("|---|---|---|" + "---|" * len(peer_med))
    for k in sorted(peer_med):
        m, rss, n = peer_med[k]
        print(f"| PyTorch {k} | {m:.0f} | {rss:.2f} GiB |" + " |" * len(peer_med))
    label = lambda r: r.get("precision", "f32") + (f"·{r['bf16_products']}" if "bf16_products" in r else "") + (f", teacher in {r['teacher_type'].upper()} blocks" if "teacher_type" in r else "") \
        + (f" (teacher.products {r['teacher_products']})" if r.get("teacher_products", "auto") != "auto" else "")
    for p in sorted({label(r) for r in o_all}):
        o = [r for r in o_all if label(r) == p]
        mo, ro = statistics.median(x["tokens_per_s"] for x in o), max(x["peak_rss_bytes"] for x in o) / 2**30
        print(f"| distill {p} | {mo:.0f} | {ro:.2f} GiB | " + " | ".join(f"{mo / peer_med[k][0]:.2f}×" for k in sorted(peer_med)) + " |")
    print(f"(medians of {min(v[2] for v in peer_med.values())}+ runs each; the fastest PyTorch variant: {best})")
print(f"raw lines in {out}")
PY
