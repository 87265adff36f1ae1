"""Reads an exported GGUF with gguf-py and checks it against the checkpoint it came from, independently of distill:
metadata, tensor names, shapes and types, and every tensor's bytes against gguf-py quantizing the checkpoint's
weights itself (Q/K rows permuted to the adjacent RoPE order as llama.cpp's converter does).
usage: check_gguf_export.py OUT.gguf CHECKPOINT/model.safetensors TYPE [EMBEDDING_TYPE [--dequant] [--types NAME=TYPE,…]]
A k-quant TYPE expects llama.cpp's fallback type on rows its 256-blocks do not divide (gguf-py cannot quantize
k-quants or IQ4_NL: check those with --dequant).
With --dequant the safetensors file holds the values the GGUF must dequantize to (a student with learned or frozen
QAT scales): gguf-py's dequantization of every tensor must equal them bit for bit.
prints one JSON object."""
import json, sys
import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import quantize, dequantize
from safetensors.numpy import load_file

path, st, tname = sys.argv[1:4]
types = {"f32": T.F32, "f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1,
         "q2_k": T.Q2_K, "q3_k": T.Q3_K, "q4_k": T.Q4_K, "q5_k": T.Q5_K, "q6_k": T.Q6_K, "iq4_nl": T.IQ4_NL,
         "mxfp4": T.MXFP4}
# what llama.cpp's quantizer (llama-cpp-python 0.3.36) writes for a k-quant on rows its 256-blocks do not divide
fallback = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
qtype = types[tname]
etype = types[sys.argv[4]] if len(sys.argv) > 4 else qtype
by_value = "--dequant" in sys.argv[5:]
# --types NAME=TYPE,…: the type each GGUF tensor must have (a preset's per-tensor choice), instead of TYPE / EMBEDDING_TYPE
given = dict(kv.split("=") for kv in sys.argv[sys.argv.index("--types") + 1].split(",")) if "--types" in sys.argv else {}
r = GGUFReader(path)

def field(name):
    f = r.fields[name]
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0].name == "STRING" else v.tolist()[0]

meta = {k: field(k) for k in ["general.architecture", "llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length", "llama.vocab_size",
                              "llama.attention.key_length"]}
heads, kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
w = load_file(st)
table = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
         "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}

def gguf_name(hf):
    if hf == "model.embed_tokens.weight": return "token_embd.weight"
    if hf == "model.norm.weight": return "output_norm.weight"
    if hf == "lm_head.weight": return "output.weight"
    p = hf.split(".")
    return f"blk.{p[2]}.{table['.'.join(p[3:-1])]}.weight"

def permute(x, n_head):  # llama.cpp convert_hf_to_gguf LlamaModel.permute
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

tensors = {t.name: t for t in r.tensors}
bad = []
for hf, x in w.items():
    name = gguf_name(hf)
    t = tensors.get(name)
    if t is None:
        bad.append(f"{name}: missing"); continue
    x = x.astype(np.float32)
    if hf.endswith("q_proj.weight"): x = permute(x, heads)
    if hf.endswith("k_proj.weight"): x = permute(x, kv)
    want_type = (etype if hf in ("model.embed_tokens.weight", "lm_head.weight") else qtype) if x.ndim == 2 else T.F32
    if want_type in fallback and x.shape[-1] % 256 != 0: want_type = fallback[want_type]
    if name in given: want_type = T[given[name]]
    if t.tensor_type != want_type: bad.append(f"{name}: type {t.tensor_type.name}, expected {want_type.name}")
    if list(reversed([int(d) for d in t.shape])) != list(x.shape): bad.append(f"{name}: shape {list(t.shape)} vs {list(x.shape)}")
    if by_value:
        back = dequantize(np.asarray(t.data), t.tensor_type).reshape(x.shape).astype(np.float32)
        if back.tobytes() != x.tobytes(): bad.append(f"{name}: gguf-py dequantizes to other values ({int((back != x).sum())} differ)")
        continue
    ours = np.asarray(t.data).tobytes()
    ref = quantize(x, want_type).tobytes() if want_type not in (T.F32,) else x.tobytes()
    if ours != ref: bad.append(f"{name}: bytes differ from gguf-py's {want_type.name} of the checkpoint")
extra = sorted(set(tensors) - {gguf_name(k) for k in w})
print(json.dumps({"metadata": meta, "tensors": len(tensors), "bad": bad, "extra": extra,
                  "tokenizer_keys": sorted(k for k in r.fields if k.startswith("tokenizer."))}))
