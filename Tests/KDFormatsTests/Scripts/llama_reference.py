#!/usr/bin/env python3
"""Independent llama forward in numpy float64 over gguf-py's dequantization.

usage: llama_reference.py MODEL.gguf OUT.f32 TOKENS_JSON
Writes the logits of every position of every prompt, concatenated, as float32.
Follows llama.cpp's llama graph: RMSNorm, GGUF-permuted Q/K with adjacent-pair RoPE (rope type NORM),
grouped-query attention, SwiGLU MLP, tied LM head when output.weight is absent.
"""
import json, sys
import numpy as np
import gguf
from gguf.quants import dequantize

path, out_path, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = gguf.GGUFReader(path)
meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.")}
arch = meta["general.architecture"]
L = meta[f"{arch}.block_count"]; H = meta[f"{arch}.attention.head_count"]
KV = meta.get(f"{arch}.attention.head_count_kv", H); eps = meta[f"{arch}.attention.layer_norm_rms_epsilon"]
base = meta.get(f"{arch}.rope.freq_base", 10000.0)
W = {t.name: dequantize(t.data, t.tensor_type).astype(np.float64).reshape([int(d) for d in reversed(t.shape)]) for t in r.tensors}
emb = W["token_embd.weight"]; head = W.get("output.weight", emb)
D = emb.shape[1]; hs = D // H

def norm(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

def rope(x, T):  # x [T, heads, hs]; pairs (2i, 2i+1)
    inv = base ** (-np.arange(0, hs, 2) / hs)
    ang = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x); y[..., 0::2] = a * c - b * s; y[..., 1::2] = a * s + b * c
    return y

outs = []
for toks in prompts:
    T = len(toks); x = emb[toks]
    for l in range(L):
        p = f"blk.{l}."
        h = norm(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, H, hs), T)
        k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, KV, hs), T)
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, hs)
        k = np.repeat(k, H // KV, axis=1); v = np.repeat(v, H // KV, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(hs)
        s = s + np.triu(np.full((T, T), -np.inf), 1)[None]
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", s, v).reshape(T, D)
        x = x + o @ W[p + "attn_output.weight"].T
        h = norm(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T; u = h @ W[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "ffn_down.weight"].T
    outs.append(norm(x, W["output_norm.weight"]) @ head.T)
np.concatenate(outs).astype(np.float32).tofile(out_path)
print("ok")
