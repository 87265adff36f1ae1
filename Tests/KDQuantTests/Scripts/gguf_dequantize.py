"""Dequantizes GGUF blocks with gguf-py (an independent reader of every type).
usage: gguf_dequantize.py IN.bin TYPE OUT.f32   (TYPE as ggml names it: Q4_K, Q6_K, …)"""
import sys
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

q = np.fromfile(sys.argv[1], dtype=np.uint8)
dequantize(q, T[sys.argv[2]]).astype(np.float32).reshape(-1).tofile(sys.argv[3])
