#!/usr/bin/env python3
"""Rewrites a Hugging Face folder's model.safetensors with the PyPI `safetensors` package as a sharded folder the way
checkpoints are published: matrices in F16, vectors in F32, split over two files (model-0000N-of-00002.safetensors).

usage: st_half.py IN.safetensors OUT_DIR
"""
import os, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

src, out = sys.argv[1], sys.argv[2]
with safe_open(src, framework="np") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
names = sorted(tensors)
half = len(names) // 2
for i, part in enumerate((names[:half], names[half:])):
    save_file({k: tensors[k].astype(np.float16) if tensors[k].ndim == 2 else tensors[k] for k in part},
              os.path.join(out, f"model-{i + 1:05d}-of-00002.safetensors"))
