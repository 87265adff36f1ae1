#!/usr/bin/env python3
"""Which type llama.cpp's quantizer gives every matrix of a GGUF in each k-quant preset: quantizes an F32 GGUF (e.g.
Launch/frontier.sh's ladder/…F32.gguf) with llama-cpp-python's llama_model_quantize into a temporary folder and prints
{preset: {tensor: type}} as JSON — the reference Tests/KDQuantTests/Fixtures/llamacpp-preset-types.json holds for
SmolLM2-135M. Needs llama-cpp-python (pip install llama-cpp-python==0.3.36).
usage: Launch/lab/llamacpp_preset_types.py F32.gguf > types.json"""
import ctypes, json, os, sys, tempfile
import gguf
import llama_cpp

PRESETS = ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K"]
src = sys.argv[1]
res = {}
with tempfile.TemporaryDirectory() as d:
    for t in PRESETS:
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + t)
        p.allow_requantize = True
        out = os.path.join(d, t + ".gguf")
        if llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(p)) != 0:
            sys.exit(f"llama.cpp could not quantize {src} to {t}")
        res[t.lower()] = {x.name: x.tensor_type.name for x in gguf.GGUFReader(out).tensors if len(x.shape) > 1}
        os.remove(out)
json.dump(res, sys.stdout, indent=0, sort_keys=True)
