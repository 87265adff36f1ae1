#!/usr/bin/env python3
"""Writes a Llama-family GGUF teacher of any shape and tensor type with random weights, for measuring memory and speed
with teachers larger than the ones we ship (never quality: its predictions are noise).

The tokenizer and vocabulary are copied from a real GGUF (default: the SmolLM2 teacher that Launch/fetch_teacher.sh
fetches), so corpora prepared for that teacher work unchanged. Tensors are written in llama.cpp's order (embedding,
blocks 0..L-1, final norm, head), one at a time: the script holds one tensor in memory, not the model.

Weights are seeded normal draws with the scales of a trained model's initialization (embedding 0.02, a projection
1/sqrt(fan_in), the residual outputs divided by sqrt(2 L)); norms are ones. Shapes are checked the way our reader and
llama.cpp check them (heads divide dim, kv_heads divide heads, block-quantized rows a multiple of the block).

  Launch/synthetic_teacher.py --preset smollm2-1.7b --type F16 --out /tmp/teacher-1.7b.gguf
  Launch/synthetic_teacher.py --layers 4 --dim 512 --ffn 1536 --heads 8 --type Q8_0 --out /tmp/small.gguf
"""
import argparse
import os
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V
except ImportError:
    sys.exit("error: synthetic_teacher.py needs gguf-py (bash Launch/setup.sh installs gguf==0.19.0), found none")

PRESETS = {
    # name: layers, dim, ffn, heads, kv_heads (vocabulary: the tokenizer's)
    "smollm2-1.7b": (24, 2048, 8192, 32, 32),
    "llama-3b": (28, 3072, 8192, 24, 8),  # Llama-3.2-3B's blocks over SmolLM2's vocabulary (~2.9 B parameters)
    "smollm2-360m": (32, 960, 2560, 15, 5),
}
TYPES = {"F32": Q.F32, "F16": Q.F16, "Q8_0": Q.Q8_0, "Q4_0": Q.Q4_0, "Q4_1": Q.Q4_1}
TOKENIZER_KEYS_COPIED = "tokenizer."


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def parse():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="GGUF file to write (written as OUT.partial, then renamed)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named shape; --layers etc. override its fields")
    p.add_argument("--layers", type=int)
    p.add_argument("--dim", type=int)
    p.add_argument("--ffn", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--type", default="F16", choices=sorted(TYPES), help="type of every matrix (norms stay F32)")
    p.add_argument("--tied", action="store_true", help="no output.weight: the head is the embedding")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer-from", default=os.path.join(here, "..", "Checkpoints", "teachers", "SmolLM2-135M-Instruct.Q4_1.gguf"),
                   help="GGUF whose tokenizer.* metadata (and so vocabulary) is copied")
    a = p.parse_args()
    base = PRESETS.get(a.preset, (None,) * 5)
    for name, v in zip(("layers", "dim", "ffn", "heads", "kv_heads"), base):
        if getattr(a, name) is None:
            setattr(a, name, v)
    missing = [n for n in ("layers", "dim", "ffn", "heads") if getattr(a, n) is None]
    if missing:
        fail(f"expected --preset or --{' --'.join(m.replace('_', '-') for m in missing)}, found neither")
    if a.kv_heads is None:
        a.kv_heads = a.heads
    for n in ("layers", "dim", "ffn", "heads", "kv_heads", "context"):
        if getattr(a, n) < 1:
            fail(f"--{n.replace('_', '-')}: expected an integer >= 1, found {getattr(a, n)}")
    if a.dim % a.heads or a.heads % a.kv_heads:
        fail(f"expected heads dividing dim and kv-heads dividing heads, found dim {a.dim}, heads {a.heads}, kv-heads {a.kv_heads}")
    block = gguf.GGML_QUANT_SIZES[TYPES[a.type]][0]
    for n in ("dim", "ffn"):
        if getattr(a, n) % block:
            fail(f"--type {a.type}: expected --{n} a multiple of its block of {block}, found {getattr(a, n)}")
    if not os.path.isfile(a.tokenizer_from):
        fail(f"--tokenizer-from: expected a GGUF file (Launch/fetch_teacher.sh fetches the default), found none at {a.tokenizer_from}")
    return a


def tokenizer_fields(path):
    """(key, value, type, sub type) of every tokenizer.* field of a GGUF, and its vocabulary size."""
    r = gguf.GGUFReader(path)
    out, vocab = [], None
    for key, f in r.fields.items():
        if not key.startswith(TOKENIZER_KEYS_COPIED):
            continue
        kind = f.types[0]
        if kind == V.ARRAY:
            sub = f.types[1]
            if sub == V.STRING:
                value = [bytes(f.parts[i]) for i in f.data]
            else:
                value = [f.parts[i][0].item() for i in f.data]
            out.append((key, value, kind, sub))
            if key == "tokenizer.ggml.tokens":
                vocab = len(value)
        elif kind == V.STRING:
            out.append((key, bytes(f.parts[f.data[0]]), kind, None))
        else:
            out.append((key, f.parts[f.data[0]][0].item(), kind, None))
    if vocab is None:
        fail(f"--tokenizer-from: expected tokenizer.ggml.tokens in {path}, found none")
    return out, vocab


def tensors(a, vocab):
    """(name, shape rows × columns or [n], std) in llama.cpp's order; std None: ones (a norm)."""
    kv = a.dim // a.heads * a.kv_heads
    resid = 1 / np.sqrt(2 * a.layers)
    yield "token_embd.weight", (vocab, a.dim), 0.02
    for l in range(a.layers):
        b = f"blk.{l}."
        yield b + "attn_norm.weight", (a.dim,), None
        yield b + "attn_q.weight", (a.dim, a.dim), 1 / np.sqrt(a.dim)
        yield b + "attn_k.weight", (kv, a.dim), 1 / np.sqrt(a.dim)
        yield b + "attn_v.weight", (kv, a.dim), 1 / np.sqrt(a.dim)
        yield b + "attn_output.weight", (a.dim, a.dim), resid / np.sqrt(a.dim)
        yield b + "ffn_norm.weight", (a.dim,), None
        yield b + "ffn_gate.weight", (a.ffn, a.dim), 1 / np.sqrt(a.dim)
        yield b + "ffn_up.weight", (a.ffn, a.dim), 1 / np.sqrt(a.dim)
        yield b + "ffn_down.weight", (a.dim, a.ffn), resid / np.sqrt(a.ffn)
    yield "output_norm.weight", (a.dim,), None
    if not a.tied:
        yield "output.weight", (vocab, a.dim), 1 / np.sqrt(a.dim)


def values(a, index, shape, std):
    if std is None:
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng([a.seed, index])
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def encoded(a, shape, x):
    """The tensor as stored: (array for write_tensor_data, ggml type)."""
    if len(shape) == 1 or a.type == "F32":
        return x, Q.F32
    if a.type == "F16":
        return x.astype(np.float16), Q.F16
    return gguf.quants.quantize(x, TYPES[a.type]), TYPES[a.type]


def main():
    a = parse()
    fields, vocab = tokenizer_fields(a.tokenizer_from)
    partial = a.out + ".partial"
    w = gguf.GGUFWriter(partial, "llama")
    w.add_name(f"synthetic {a.layers}x{a.dim} ffn {a.ffn} {a.type} (random weights, seed {a.seed})")
    w.add_block_count(a.layers)
    w.add_context_length(a.context)
    w.add_embedding_length(a.dim)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(a.dim // a.heads)
    w.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}[a.type])
    for key, value, kind, sub in fields:
        w.add_key_value(key, value, kind, sub)
    specs = list(tensors(a, vocab))
    total = 0
    for name, shape, std in specs:
        kind = Q.F32 if len(shape) == 1 or a.type == "F32" else TYPES[a.type]
        rows, cols = (1, shape[0]) if len(shape) == 1 else shape
        block, size = gguf.GGML_QUANT_SIZES[kind]
        nbytes = rows * cols // block * size
        total += nbytes
        # gguf-py takes the byte shape of a quantized tensor and the element shape otherwise
        stored = shape if kind in (Q.F32, Q.F16) else gguf.quant_shape_to_byte_shape(shape, kind)
        dtype = {Q.F32: np.float32, Q.F16: np.float16}.get(kind, np.uint8)
        w.add_tensor_info(name, stored, np.dtype(dtype), nbytes, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (name, shape, std) in enumerate(specs):
        data, _ = encoded(a, shape, values(a, i, shape, std))
        w.write_tensor_data(data)
    w.close()
    os.replace(partial, a.out)
    params = sum(int(np.prod(s)) for _, s, _ in specs)
    print(f"wrote {a.out}: llama {a.layers} x {a.dim}, ffn {a.ffn}, heads {a.heads}/{a.kv_heads}, vocab {vocab}, "
          f"{params / 1e9:.3f} B parameters, {a.type}, {os.path.getsize(a.out) / 2**30:.2f} GiB (tensor data {total / 2**30:.2f} GiB)")


if __name__ == "__main__":
    main()
