#!/usr/bin/env python3
"""llama.cpp's NLL of a GGUF on a text, window by window as `distill eval --text` counts it.

usage: check_llamacpp.py MODEL.gguf TEXT CONTEXT MAX_WINDOWS  (needs llama-cpp-python; prints one JSON line)
The text is tokenized by `distill tokenize` (DISTILL_BIN, default .build/release/distill) so both programs score the
same ids: non-overlapping windows of CONTEXT tokens, every next-token prediction inside a window counts.
"""
import json, math, os, subprocess, sys
import numpy as np
import llama_cpp.llama_cpp as lc
from llama_cpp import Llama

# No extra buffer types (weight repacking): on a virtual CPU that reports AMX without enabling it (here, "Intel(R)
# Xeon(R) Processor"), a native build packs the weights for its AMX kernels and dies of SIGILL on the first tileloadd.
# Without repacking, llama.cpp runs its ordinary CPU kernels for every type.
_defaults = lc.llama_model_default_params
def _no_repack():
    p = _defaults()
    p.use_extra_bufts = False
    return p
lc.llama_model_default_params = _no_repack

model, text_path, context, max_windows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
distill = os.environ.get("DISTILL_BIN", ".build/release/distill")
text = open(text_path, encoding="utf-8", newline="").read()  # as distill reads it: a \r\n stays two characters
ids = json.loads(subprocess.run([distill, "tokenize", "--model", model], input=json.dumps(text) + "\n",
                                capture_output=True, text=True, check=True).stdout.splitlines()[0])
llm = Llama(model_path=model, n_ctx=context, n_batch=context, n_ubatch=context, logits_all=True, verbose=False, n_threads=2)
total, count = 0.0, 0
windows = [ids[i:i + context] for i in range(0, len(ids) - 1, context)]
windows = [w for w in windows if len(w) >= 2]
if max_windows > 0:
    windows = windows[:max_windows]
for w in windows:
    llm.reset()
    llm.eval(w)
    logits = np.array(llm.scores[:len(w)], dtype=np.float64)
    m = logits.max(-1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(logits - m).sum(-1)))
    for p in range(len(w) - 1):
        total += lse[p] - logits[p, w[p + 1]]
        count += 1
print(json.dumps({"model": model, "predicted": count, "mean_nll": total / count}))
