"""Quantizes float32 values with gguf-py (the reference our quantizers must match bit for bit).
usage: gguf_quantize.py IN.f32 TYPE OUT.bin OUT_DEQUANT.f32"""
import sys
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

x = np.fromfile(sys.argv[1], dtype=np.float32).reshape(-1, 64)
t = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "mxfp4": T.MXFP4, "f16": T.F16}[sys.argv[2]]
q = quantize(x, t)
q.tofile(sys.argv[3])
dequantize(q, t).astype(np.float32).tofile(sys.argv[4])
