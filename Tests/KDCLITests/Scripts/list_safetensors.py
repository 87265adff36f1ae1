"""Lists a safetensors file's tensors as 'name [shape] dtype' lines, read with the PyPI safetensors package."""
import sys
from safetensors import safe_open

with safe_open(sys.argv[1], framework="np") as f:
    for k in sorted(f.keys()):
        a = f.get_tensor(k)
        print(f"{k} {list(a.shape)} {a.dtype}")
