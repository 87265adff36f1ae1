#!/usr/bin/env bash
# Teacher forward speed by family, beside llama.cpp on the same files and threads: distill eval (release) and
# llama.cpp's prompt evaluation (llama-cpp-python==0.3.36, no weight repacking; Launch/lab/check_llamacpp.py explains why)
# of the same windows of the held-out book — BOS plus 127 tokens per window for Gemma, 128 tokens for SmolLM2 — on 2
# threads, rounds interleaved, medians. llama.cpp twice: logits of the last position only (its prompt processing) and
# of every position (what scoring a text needs, as distill eval computes). Also each distill run's peak RSS.
# usage: Launch/lab/bench_teachers.sh [ROUNDS] [WINDOWS]   (defaults 3 and 16)
#   PRECISION=f32|bf16 (default f32): distill eval's matmul precision. BATCH (default 1, as llama.cpp reads here: one
#     window per call): windows per distill forward (a distillation step feeds its teacher whole micro-batches).
#   REQUANT="Q4_0 Q8_0": also SmolLM2 requantized by llama.cpp's quantizer to these types (from an F32 copy of the
#     shipped Q4_1 file; kept in Checkpoints/teachers/), llama.cpp's fastest paths. GEMMA=0 leaves Gemma out.
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for every command (a user's machine does not set them).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
windows=${2:-16}
precision=${PRECISION:-f32}
batch=${BATCH:-1}
d=${DISTILL_BIN:-.build/release/distill}
run() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
python3 -c "import llama_cpp" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore "llama-cpp-python==0.3.36"
book=$(bash Launch/fetch_heldout.sh)
smol=$(bash Launch/fetch_teacher.sh)
models=("$smol")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for type in ${REQUANT:-}; do
    dest=Checkpoints/teachers/SmolLM2-135M-Instruct.$type.gguf
    if [ ! -s "$dest" ]; then
        python3 - "$smol" "$out/f32.gguf" "$dest.part" "$type" <<'PY'
import ctypes, os, sys
import llama_cpp
src, f32, dest, kind = sys.argv[1:]
def quantize(a, b, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = True
    if llama_cpp.llama_model_quantize(a.encode(), b.encode(), ctypes.byref(p)) != 0:
        sys.exit(f"bench_teachers: llama.cpp could not quantize {a} to {b}")
if not os.path.exists(f32):
    quantize(src, f32, llama_cpp.LLAMA_FTYPE_ALL_F32)
quantize(f32, dest, getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}"))
PY
        mv "$dest.part" "$dest"
    fi
    models+=("$dest")
done
[ "${GEMMA:-1}" = 0 ] || models+=("$(bash Launch/fetch_teacher.sh gemma3)")
for r in $(seq "$rounds"); do
    for m in "${models[@]}"; do
        name=$(basename "$m" .gguf)
        run /usr/bin/time -f "%M" -o "$out/rss" $d eval --model "$m" --text "$book" --context 128 --max-windows "$windows" --threads 2 \
            --precision "$precision" --batch "$batch" --json > "$out/eval.json"
        python3 - "$out/eval.json" "$out/rss" "$name" >> "$out/distill.txt" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); rss = int(open(sys.argv[2]).read().split()[-1])
print(sys.argv[3], j["tokens_per_s"], rss / 1024, j["mean_nll"])
PY
        run python3 - "$m" "$book" "$windows" "$name" >> "$out/llamacpp.txt" <<'PY'
import sys, time
import llama_cpp.llama_cpp as lc
from llama_cpp import Llama
_d = lc.llama_model_default_params
def _p():
    p = _d(); p.use_extra_bufts = False; return p
lc.llama_model_default_params = _p
model, book, windows, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = []
for all_logits in (False, True):
  llm = Llama(model_path=model, n_ctx=128, n_batch=128, n_ubatch=128, n_threads=2, n_threads_batch=2, logits_all=all_logits, verbose=False)
  add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
  ids = llm.tokenize(open(book, encoding="utf-8", newline="").read().encode(), add_bos=False, special=False)
  lead = [llm.token_bos()] if add_bos else []
  body = 128 - len(lead)
  ws = [lead + ids[i:i + body] for i in range(0, body * windows, body)]
  n, t = 0, 0.0
  for w in ws:
      llm.reset()
      t0 = time.perf_counter(); llm.eval(w); t += time.perf_counter() - t0; n += len(w)
  out.append(n / t)
  del llm
print(name, *out)
PY
    done
done
python3 - "$out/distill.txt" "$out/llamacpp.txt" "$precision" "$batch" <<'PY'
import statistics, sys
d, l = {}, {}
for line in open(sys.argv[1]):
    n, tps, rss, nll = line.split(); d.setdefault(n, []).append((float(tps), float(rss), float(nll)))
for line in open(sys.argv[2]):
    n, last, every = line.split(); l.setdefault(n, []).append((float(last), float(every)))
print(f"distill eval --precision {sys.argv[3]} --batch {sys.argv[4]}")
print("| teacher | distill tokens/s (every position's logits) | llama.cpp, last logits only | llama.cpp, every position's logits | distill / llama.cpp (every position) | distill peak RSS | book NLL |")
print("|---|---|---|---|---|---|---|")
for n in d:
    dt = statistics.median(x[0] for x in d[n]); la = statistics.median(x[0] for x in l[n]); le = statistics.median(x[1] for x in l[n])
    print(f"| {n} | {dt:.0f} | {la:.0f} | {le:.0f} | {dt / le:.2f}x | {statistics.median(x[1] for x in d[n]):.0f} MiB | {d[n][0][2]:.4f} |")
PY
