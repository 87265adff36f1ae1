#!/usr/bin/env python3
"""Small random GGUF models of each family distill runs, written with the PyPI `gguf` package (llama.cpp's gguf-py)
under each family's real metadata keys and tensor names (as llama.cpp's convert_hf_to_gguf.py writes them).

usage: family_fixtures.py OUTDIR        writes OUTDIR/{llama,qwen2,qwen3,gemma3,llama3}.gguf
llama3.gguf is llama with Llama 3.1's RoPE scaling: rope_freqs.weight computed as llama.cpp's converter does from
rope_scaling {factor 8, low 1, high 4, original context 16} (small, so the 4 frequencies of head size 8 take all three
branches), beside OUTDIR/llama3-rope-scaling.json holding those parameters.
Shapes: dim 32, 4 query heads over 2 kv heads, ffn 48, vocabulary 64; qwen3 and gemma3 use head size 16 (≠ 32/4);
gemma3 has 6 blocks (5 sliding with window 4, 1 global) so both kinds are exercised; qwen2 has an untied head.
Each block stores its v projection as Q8_0 so the packed path is exercised too.
"""
import json, math, sys, pathlib
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
D, H, KV, F, V = 32, 4, 2, 48, 64

for name in ["llama", "qwen2", "qwen3", "gemma3", "llama3"]:
    arch = "llama" if name == "llama3" else name
    rng = np.random.default_rng({"llama": 1, "qwen2": 2, "qwen3": 3, "gemma3": 4, "llama3": 5}[name])
    hs = 16 if arch in ("qwen3", "gemma3") else D // H
    layers = 6 if arch == "gemma3" else 2
    w = gguf.GGUFWriter(str(out / f"{name}.gguf"), arch)
    w.add_block_count(layers); w.add_embedding_length(D); w.add_feed_forward_length(F)
    w.add_head_count(H); w.add_head_count_kv(KV); w.add_context_length(32); w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6 if arch == "gemma3" else 500000.0 if name == "llama3" else 10000.0)
    if name == "llama3":
        scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        json.dump(scaling, open(out / "llama3-rope-scaling.json", "w"))
        freqs = 1.0 / (500000.0 ** (np.arange(0, hs, 2, dtype=np.float64) / hs))
        lo, hi = 16 / 1.0, 16 / 4.0
        factors = []
        for f in freqs:
            wl = 2 * math.pi / f
            if wl < hi: factors.append(1.0)
            elif wl > lo: factors.append(8.0)
            else:
                s = (16 / wl - 1.0) / (4.0 - 1.0)
                factors.append(1 / ((1 - s) / 8.0 + s))
        w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    if hs != D // H: w.add_key_length(hs); w.add_value_length(hs)
    if arch == "gemma3": w.add_sliding_window(4)
    def mat(name, rows, cols, q8=False):
        a = (rng.standard_normal((rows, cols)) * 0.3).astype(np.float32)
        if q8: w.add_tensor(name, quantize(a, T.Q8_0), raw_dtype=T.Q8_0)
        else: w.add_tensor(name, a)
    def vec(name, n, mean=1.0, sd=0.1): w.add_tensor(name, (mean + rng.standard_normal(n) * sd).astype(np.float32))
    mat("token_embd.weight", V, D)
    for l in range(layers):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", D)
        mat(p + "attn_q.weight", H * hs, D); mat(p + "attn_k.weight", KV * hs, D); mat(p + "attn_v.weight", KV * hs, D, q8=True)
        if arch == "qwen2":
            vec(p + "attn_q.bias", H * hs, 0, 0.3); vec(p + "attn_k.bias", KV * hs, 0, 0.3); vec(p + "attn_v.bias", KV * hs, 0, 0.3)
        if arch in ("qwen3", "gemma3"):
            vec(p + "attn_q_norm.weight", hs); vec(p + "attn_k_norm.weight", hs)
        mat(p + "attn_output.weight", D, H * hs)
        if arch == "gemma3": vec(p + "post_attention_norm.weight", D); vec(p + "post_ffw_norm.weight", D)
        vec(p + "ffn_norm.weight", D)
        mat(p + "ffn_gate.weight", F, D); mat(p + "ffn_up.weight", F, D); mat(p + "ffn_down.weight", D, F)
    vec("output_norm.weight", D)
    if arch == "qwen2": mat("output.weight", V, D)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("ok")
