#!/usr/bin/env bash
# The exported student works in llama.cpp: exports CHECKPOINT as Q8_0 and Q4_0 GGUF, each with the embedding quantized
# and kept F16 (--embedding-quant f16), and checks that llama.cpp (llama-cpp-python==0.3.36, built from source by pip: about
# 10 minutes on 2 cores, once) scores the held-out text with the NLL `distill eval` gives, within 5e-3 nats per token
# (llama.cpp rounds activations to 8 bits inside its quantized dot products; distill does not).
# usage: Launch/lab/check_llamacpp.sh CHECKPOINT [TEXT] [WINDOWS]   (TEXT default: the held-out book, Launch/fetch_heldout.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
ckpt=${1:?usage: Launch/lab/check_llamacpp.sh CHECKPOINT [TEXT] [WINDOWS]}
text=${2:-$(bash Launch/fetch_heldout.sh)}
windows=${3:-16}
d=${DISTILL_BIN:-.build/release/distill}
# the default build (native); check_llamacpp.py turns off weight repacking, whose AMX kernels die of SIGILL on a virtual
# CPU that reports AMX without enabling it (the GGML_AMX_* CMake options do not help: a native build follows -march=native)
python3 -c "import llama_cpp" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore "llama-cpp-python==0.3.36"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
printf "%-28s %12s %12s %10s\n" "export" "distill NLL" "llama.cpp" "|diff|"
for quant in q8_0 q4_0; do
    for emb in quantized f16; do
        f=$out/student-$quant-$emb.gguf
        e=$quant; [ "$emb" = f16 ] && e=f16
        $d export "$ckpt" --format gguf --quant $quant --embedding-quant $e --out "$f" > /dev/null
        a=$($d eval --model "$f" --text "$text" --context 128 --max-windows "$windows" --json 2>/dev/null | python3 -c "import json,sys;print(json.load(sys.stdin)['mean_nll'])")
        b=$(DISTILL_BIN=$d python3 Launch/lab/check_llamacpp.py "$f" "$text" 128 "$windows" | python3 -c "import json,sys;print(json.load(sys.stdin)['mean_nll'])")
        diff=$(python3 -c "print(abs($a-$b))")
        ok=$(python3 -c "print('ok' if $diff <= 5e-3 else 'FAIL')")
        printf "%-28s %12.4f %12.4f %10.5f %s\n" "$quant, embedding $emb" "$a" "$b" "$diff" "$ok"
        [ "$ok" = ok ] || status=1
    done
done
exit $status
