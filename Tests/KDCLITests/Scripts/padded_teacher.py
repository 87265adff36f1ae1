#!/usr/bin/env python3
"""A small qwen2 teacher whose vocabulary tables have 16 rows more than a byte-level student's 256, as Qwen pads
its table past its tokenizer; written with gguf-py, byte-level BPE tokenizer (no merges) in its metadata.
usage: padded_teacher.py OUT.gguf padded|real     (real: the 16 extra ids are real tokens, another tokenizer)"""
import sys
import numpy as np
import gguf

out, kind = sys.argv[1], sys.argv[2]
D, H, KV, F, V = 32, 4, 2, 48, 256 + 16
rng = np.random.default_rng(5)
w = gguf.GGUFWriter(out, "qwen2")
w.add_block_count(1); w.add_embedding_length(D); w.add_feed_forward_length(F); w.add_head_count(H); w.add_head_count_kv(KV)
w.add_context_length(64); w.add_layer_norm_rms_eps(1e-6); w.add_rope_freq_base(10000.0)
# GPT-2's byte-to-unicode table: the 256 byte tokens
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + n); n += 1
byte_tok = dict(zip(bs, (chr(c) for c in cs)))
extra = [f"[PAD{i}]" for i in range(256, V)] if kind == "padded" else [f"word{i}" for i in range(256, V)]
w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("qwen2")
w.add_token_list([byte_tok[b] for b in range(256)] + extra); w.add_token_merges(["Ġ Ġ"])  # one merge (gguf-py drops an empty list)
w.add_token_types([1] * 256 + [3 if kind == "padded" else 1] * 16)
def mat(name, r, c): w.add_tensor(name, (rng.standard_normal((r, c)) * 0.3).astype(np.float32))
def vec(name, n, m=1.0, s=0.1): w.add_tensor(name, (m + rng.standard_normal(n) * s).astype(np.float32))
mat("token_embd.weight", V, D)
p = "blk.0."
vec(p + "attn_norm.weight", D); mat(p + "attn_q.weight", D, D); mat(p + "attn_k.weight", KV * 8, D); mat(p + "attn_v.weight", KV * 8, D)
vec(p + "attn_q.bias", D, 0, 0.3); vec(p + "attn_k.bias", KV * 8, 0, 0.3); vec(p + "attn_v.bias", KV * 8, 0, 0.3)
mat(p + "attn_output.weight", D, D); vec(p + "ffn_norm.weight", D)
mat(p + "ffn_gate.weight", F, D); mat(p + "ffn_up.weight", F, D); mat(p + "ffn_down.weight", D, F)
vec("output_norm.weight", D); mat("output.weight", V, D)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print("ok")
