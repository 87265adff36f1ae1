#!/usr/bin/env python3
"""Independent fixtures for the GGUF tests, written with the PyPI `gguf` package (llama.cpp's gguf-py).

out/types.gguf            one tensor per GGML type distill reads (random blocks with finite f16 scales)
out/<TYPE>.f32            gguf-py's dequantization of that tensor, raw little-endian float32
out/metadata.gguf         every metadata value type, and a small llama-shaped model for the loader
"""
import sys, pathlib
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(1234)

# byte offsets of the f16 scale fields inside each block
HALF_FIELDS = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
               T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
               T.IQ4_NL: [0], T.IQ4_XS: [0], T.MXFP4: []}  # MXFP4: its scale byte is any E8M0 value

w = gguf.GGUFWriter(str(out / "types.gguf"), "llama")
rows = 3
for qt in [T.F32, T.F16, T.BF16, *HALF_FIELDS]:
    block, size = gguf.GGML_QUANT_SIZES[qt]
    cols = 512  # two K-quant super-blocks, sixteen 32-blocks
    if qt == T.F32:
        data = rng.standard_normal((rows, cols)).astype(np.float32)
        raw = data.view(np.uint8)
    elif qt == T.F16:
        raw = rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    elif qt == T.BF16:
        f = rng.standard_normal((rows, cols)).astype(np.float32)
        raw = (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    else:
        nb = rows * cols // block
        blocks = rng.integers(0, 256, size=(nb, size), dtype=np.uint8)
        for off in HALF_FIELDS[qt]:
            blocks[:, off:off + 2] = rng.uniform(-2, 2, size=(nb, 1)).astype(np.float16).view(np.uint8)
        raw = blocks.reshape(rows, -1)
    w.add_tensor(qt.name, raw, raw_dtype=qt)
    ref = dequantize(raw, qt).astype(np.float32)
    assert ref.shape == (rows, cols), (qt.name, ref.shape)
    ref.tofile(out / f"{qt.name}.f32")
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

m = gguf.GGUFWriter(str(out / "metadata.gguf"), "llama")
m.add_uint8("t.u8", 200); m.add_int8("t.i8", -100); m.add_uint16("t.u16", 60000); m.add_int16("t.i16", -30000)
m.add_uint32("t.u32", 4000000000); m.add_int32("t.i32", -2000000000); m.add_float32("t.f32", 0.25)
m.add_uint64("t.u64", 2**40 + 3); m.add_int64("t.i64", -(2**40)); m.add_float64("t.f64", 1e-300)
m.add_bool("t.bool", True); m.add_string("t.str", "héllo ✓"); m.add_array("t.arr", [1, 2, 3])
m.add_array("t.strs", ["a", "bc", ""])
m.add_custom_alignment(64)
m.add_tensor("x", np.arange(64, dtype=np.float32).reshape(2, 32))
m.write_header_to_file(); m.write_kv_data_to_file(); m.write_tensors_to_file(); m.close()
t = gguf.GGUFWriter(str(out / "partial-llama.gguf"), "llama")
t.add_block_count(1); t.add_embedding_length(32); t.add_feed_forward_length(64); t.add_head_count(4)
t.add_context_length(16); t.add_layer_norm_rms_eps(1e-5)
t.add_tensor("token_embd.weight", np.zeros((64, 32), dtype=np.float32))
t.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
t.write_header_to_file(); t.write_kv_data_to_file(); t.write_tensors_to_file(); t.close()

a = gguf.GGUFWriter(str(out / "mamba.gguf"), "mamba")
a.add_tensor("x", np.zeros((2, 32), dtype=np.float32))
a.write_header_to_file(); a.write_kv_data_to_file(); a.write_tensors_to_file(); a.close()
print("ok")
