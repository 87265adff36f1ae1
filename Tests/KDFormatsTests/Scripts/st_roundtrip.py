#!/usr/bin/env python3
"""Reads a safetensors file with the PyPI `safetensors` package and writes it back with that package's own writer,
each tensor as F32 and as F16 (`<name>.f16`). Prints the metadata it read as JSON.

usage: st_roundtrip.py IN.safetensors OUT.safetensors
"""
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

src, dst = sys.argv[1], sys.argv[2]
out = {}
with safe_open(src, framework="np") as f:
    meta = f.metadata()
    for k in f.keys():
        a = f.get_tensor(k)
        assert a.dtype == np.float32, (k, a.dtype)
        out[k] = a
        out[k + ".f16"] = a.astype(np.float16)
save_file(out, dst, metadata={"written_by": "safetensors"})
print(json.dumps(meta))
