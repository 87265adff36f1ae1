#!/usr/bin/env python3
"""Reads a family's GGUF export with gguf-py and its Hugging Face export with safetensors + json, independently of
distill, and prints what a loader would see: architecture, the family's own metadata keys, tensor names, config.json,
and for every norm weight the largest |GGUF value - (HF value + offset)| (Gemma's HF norms store w for 1 + w).
usage: family_export_check.py OUT.gguf HF_DIR NORM_OFFSET"""
import json, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file

g, hf, offset = sys.argv[1], sys.argv[2], float(sys.argv[3])
r = GGUFReader(g)
arch = r.fields["general.architecture"].contents()
keys = {k: r.fields[k].contents() for k in r.fields if k.startswith(arch + ".")}
tensors = {t.name: dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)]) for t in r.tensors}
cfg = json.load(open(hf + "/config.json"))
st = load_file(hf + "/model.safetensors")
# HF name -> GGUF name by the convention llama.cpp's converter uses for the family
table = {"input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm" if arch == "gemma3" else "ffn_norm",
         "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
         "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
worst = 0.0
for name, v in st.items():
    if not name.endswith("norm.weight"): continue
    if name == "model.norm.weight": gname = "output_norm.weight"
    else:
        parts = name.split(".")
        gname = f"blk.{parts[2]}.{table['.'.join(parts[3:-1])]}.weight"
    worst = max(worst, float(np.abs(tensors[gname] - (v.astype(np.float64) + offset)).max()))
print(json.dumps({"architecture": arch, "keys": sorted(keys), "tensors": sorted(tensors), "hf_architectures": cfg["architectures"],
                  "model_type": cfg["model_type"], "norm_gap": worst, "layer_types": cfg.get("layer_types"),
                  "hf_tensors": len(st)}))
