#!/usr/bin/env python3
"""llama.cpp's mean NLL of a GGUF model on consecutive windows of a text, in the model's own arithmetic (a quantized
file stays quantized: llama.cpp multiplies its blocks by 8-bit activations), written as JSON with the token ids.
usage: python3 Launch/lab/llamacpp_window_nll.py MODEL TEXT WINDOWS LENGTH OUT.json"""
import json, sys

import llama_cpp
import numpy as np
from llama_cpp import Llama

path, text_path, windows, length, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
llm = Llama(model_path=path, n_ctx=length, n_batch=length, logits_all=True, n_threads=2, verbose=False)
ids = llm.tokenize(open(text_path, encoding="utf-8").read().encode(), add_bos=False, special=False)
if len(ids) < windows * length + 1:
    sys.exit(f"llamacpp_window_nll: expected at least {windows * length + 1} tokens, found {len(ids)}")
per = []
for w in range(windows):
    toks, targets = ids[w * length:(w + 1) * length], ids[w * length + 1:(w + 1) * length + 1]
    llm.reset()
    llm.eval(toks)
    logits = np.array(llm.scores[:length], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    per.append(float((lse - logits[np.arange(length), targets]).mean()))
json.dump({"model": path.split("/")[-1], "llama_cpp_python": llama_cpp.__version__, "windows": windows, "length": length,
           "tokens": ids[:windows * length + 1], "window_nll": per, "mean_nll": sum(per) / windows}, open(out, "w"))
print(f"llama.cpp mean NLL {sum(per) / windows:.6f} over {windows} × {length} tokens -> {out}")
