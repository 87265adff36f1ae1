#!/usr/bin/env python3
"""Independent forward in numpy float64 over gguf-py's dequantization, for every family distill runs.

usage: model_reference.py MODEL.gguf OUT.f32 TOKENS_JSON
Writes the logits of every position of every prompt, concatenated, as float32.
Written from the published model definitions (Hugging Face modeling_{llama,qwen2,qwen3,gemma3}.py) and llama.cpp's
graphs for the same architectures:
  llama   RMSNorm, GGUF-permuted Q/K with adjacent-pair RoPE (rope type NORM), GQA, SwiGLU, tied head if no output.weight;
          with rope_freqs.weight (Llama 3.1+) each RoPE frequency divided by its factor
  qwen2   llama + q/k/v biases, rotate-half RoPE (NEOX)
  qwen3   llama + RMSNorm over each q and k head before RoPE, head size from key_length, NEOX
  gemma3  embedding · sqrt(dim); q/k head norms; attention output and MLP output normed before the residual add;
          GELU(tanh) gate; sliding window on every block but each 6th, whose RoPE base is 10000 (the others freq_base);
          attention scale 1/sqrt(head size); GGUF norms already hold 1 + w
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
D = emb.shape[1]
hs = meta.get(f"{arch}.attention.key_length", D // H)
window = meta.get(f"{arch}.attention.sliding_window", 0) if arch == "gemma3" else 0

def norm(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

def rope(x, T, theta):  # x [T, heads, hs]
    inv = theta ** (-np.arange(0, hs, 2) / hs)
    if "rope_freqs.weight" in W: inv = inv / W["rope_freqs.weight"]  # Llama 3.1+: per-frequency divisors
    ang = np.arange(T)[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    y = np.empty_like(x)
    if arch == "llama":  # pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        y[..., 0::2] = a * c - b * s; y[..., 1::2] = a * s + b * c
    else:  # rotate_half: pairs (i, i + hs/2)
        a, b = x[..., :hs // 2], x[..., hs // 2:]
        y[..., :hs // 2] = a * c - b * s; y[..., hs // 2:] = a * s + b * c
    return y

def gelu_tanh(g): return 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))

outs = []
for toks in prompts:
    T = len(toks); x = emb[toks]
    if arch == "gemma3": x = x * np.sqrt(D)
    for l in range(L):
        p = f"blk.{l}."
        sliding = arch == "gemma3" and (l + 1) % 6 != 0
        theta = 10000.0 if sliding else base
        h = norm(x, W[p + "attn_norm.weight"])
        q = h @ W[p + "attn_q.weight"].T; k = h @ W[p + "attn_k.weight"].T; v = h @ W[p + "attn_v.weight"].T
        if p + "attn_q.bias" in W:
            q = q + W[p + "attn_q.bias"]; k = k + W[p + "attn_k.bias"]; v = v + W[p + "attn_v.bias"]
        q = q.reshape(T, H, hs); k = k.reshape(T, KV, hs); v = v.reshape(T, KV, hs)
        if p + "attn_q_norm.weight" in W:
            q = norm(q, W[p + "attn_q_norm.weight"]); k = norm(k, W[p + "attn_k_norm.weight"])
        q = rope(q, T, theta); k = rope(k, T, theta)
        k = np.repeat(k, H // KV, axis=1); v = np.repeat(v, H // KV, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(hs)
        i, j = np.arange(T)[:, None], np.arange(T)[None, :]
        masked = (j > i) | ((i - j >= window) if sliding and window > 0 else False)
        s = np.where(masked[None], -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        o = np.einsum("htu,uhd->thd", s, v).reshape(T, H * hs) @ W[p + "attn_output.weight"].T
        if p + "post_attention_norm.weight" in W: o = norm(o, W[p + "post_attention_norm.weight"])
        x = x + o
        h = norm(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T; u = h @ W[p + "ffn_up.weight"].T
        act = gelu_tanh(g) if arch == "gemma3" else g / (1 + np.exp(-g))
        y = (act * u) @ W[p + "ffn_down.weight"].T
        if p + "post_ffw_norm.weight" in W: y = norm(y, W[p + "post_ffw_norm.weight"])
        x = x + y
    outs.append(norm(x, W["output_norm.weight"]) @ head.T)
np.concatenate(outs).astype(np.float32).tofile(out_path)
print("ok")
