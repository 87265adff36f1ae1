#!/usr/bin/env bash
# Regenerates Tests/KDFormatsTests/Fixtures/gemma3-270m-llamacpp.json, the llama.cpp answers the Gemma tests compare
# with: builds llama.cpp (llama-cpp-python==0.3.36 from source, about 10 minutes on 2 cores, once), fetches Gemma-3-270M,
# makes its F32 copy with llama.cpp's quantizer (LLAMA_FTYPE_ALL_F32; 1.1 GB, in a temporary folder) and runs
# Launch/lab/llamacpp_reference.py on it (tokenizer from the original file). About 2 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import llama_cpp" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore "llama-cpp-python==0.3.36"
src=$(bash Launch/fetch_teacher.sh gemma3)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$src" "$tmp/f32.gguf" <<'PY'
import ctypes, sys
import llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
p.allow_requantize = True
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
PY
python3 Launch/lab/llamacpp_reference.py "$tmp/f32.gguf" Tests/KDTrainTests/Fixtures/fortunes-sample.txt 128 8 \
    Tests/KDFormatsTests/Fixtures/gemma3-270m-llamacpp.json "$src"
