#!/usr/bin/env bash
# Regenerates Tests/KDFormatsTests/Fixtures/smollm2-q4_1-llamacpp.json, what the 8-bit teacher test compares with:
# llama.cpp's NLL of the shipped SmolLM2 Q4_1 file itself (its quantized blocks times 8-bit activations, as
# distill's int8 products compute) on 4 × 128 tokens of the fortunes sample. llama-cpp-python==0.3.36 (built from source
# once, about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import llama_cpp" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore "llama-cpp-python==0.3.36"
python3 Launch/lab/llamacpp_window_nll.py "$(bash Launch/fetch_teacher.sh)" Tests/KDTrainTests/Fixtures/fortunes-sample.txt 4 128 \
    Tests/KDFormatsTests/Fixtures/smollm2-q4_1-llamacpp.json
