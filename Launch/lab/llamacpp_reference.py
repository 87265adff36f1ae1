#!/usr/bin/env python3
"""llama.cpp's answers for a GGUF model, as committed reference data for distill's tests.

usage: llamacpp_reference.py MODEL.gguf TEXT CONTEXT WINDOWS OUT.json [VOCAB_MODEL.gguf]
Writes, from llama.cpp (llama-cpp-python) alone:
  tokens    ids of a few dozen varied strings (accents, CJK, emoji, code, runs of spaces and newlines, control-token
            text), BOS as the file asks, control tokens not parsed
  nll       mean NLL (and each window's sum) over the first WINDOWS windows of TEXT (read with newline=""): each window is BOS (when the file
            adds one) and the next CONTEXT - 1 tokens, every token of the window predicted from those before it
  chat      ids of a user turn in Gemma's chat template, control tokens parsed (special=True)
  greedy    24 tokens of greedy continuation (argmax of llama.cpp's logits, step by step) for a few prompts
MODEL is the F32 copy of a quantized file (llama.cpp rounds activations to 8 bits in its quantized dot products;
distill computes in f32 over the same dequantized weights), VOCAB_MODEL the file whose tokenizer to use (default MODEL).
"""
import json, sys
import numpy as np
import llama_cpp.llama_cpp as lc
from llama_cpp import Llama

# no weight repacking: its AMX kernels die of SIGILL on virtual CPUs that report AMX (see Launch/lab/check_llamacpp.py)
_defaults = lc.llama_model_default_params
def _no_repack():
    p = _defaults(); p.use_extra_bufts = False; return p
lc.llama_model_default_params = _no_repack

STRINGS = [
    "Hello world", "  multiple   spaces\n\nnewlines", "héllo 日本語 😀 code(){ return x; }", " leading space", "trailing space ",
    "tabs\tand\t\ttabs", "\n" * 40 + "end", "<start_of_turn>user\nhi<end_of_turn>", "<div><a href='x'>link</a></div>",
    "Ünïcödé àccents façade naïve", "数学是科学的语言。", "emoji 👩‍👩‍👧‍👦 family 🇫🇷 flag", "def f(x):\n    return x**2  # square\n",
    "1234567890 3.14159 -42", "ǅ ǈ ǋ Ǳ ̈a combining", "\u00a0nbsp\u2009thin", "a" * 50, "", " ", "\r\n\r\nwindows",
    "The quick brown fox jumps over the lazy dog.", "<unused0> <bos> <eos>", "Ελληνικά кириллица עברית العربية",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "\x00\x01 control \x7f", "    indented\n\tcode\n", "ﬁ ligature Å Ω µ", "日本語のテキストとカタカナ",
    "x = [1, 2, 3]; y = {'a': 1}", "Mr. O'Neil's \"quotes\" — dashes – and…", "\n\n\n\n", "    ", "end.\n",
]
PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):"]

model, text_path, context, windows, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
vocab = Llama(model_path=sys.argv[6] if len(sys.argv) > 6 else model, vocab_only=True, verbose=False)
add_bos = vocab.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
bos = vocab.token_bos()
tokens = [vocab.tokenize(s.encode(), add_bos=add_bos, special=False) for s in STRINGS]
CHAT = "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
chat = {"text": CHAT, "ids": vocab.tokenize(CHAT.encode(), add_bos=add_bos, special=True)}
llm = Llama(model_path=model, n_ctx=context, n_batch=context, n_ubatch=context, logits_all=True, verbose=False, n_threads=2)
text = open(text_path, encoding="utf-8", newline="").read()
ids = llm.tokenize(text.encode(), add_bos=False, special=False)
lead = [bos] if add_bos else []
body = context - len(lead)
total, count, per_window = 0.0, 0, []
for k, s in enumerate(range(0, len(ids), body)):
    if k == windows: break
    w = lead + ids[s:s + body]
    if len(w) < 2: break
    llm.reset(); llm.eval(w)
    logits = np.array(llm.scores[:len(w)], dtype=np.float64)
    m = logits.max(-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(-1))
    nll = sum(lse[p] - logits[p, w[p + 1]] for p in range(len(w) - 1))
    per_window.append({"predicted": len(w) - 1, "nll_sum": nll})
    total += nll; count += len(w) - 1
greedy = []
for prompt in PROMPTS:
    seq = llm.tokenize(prompt.encode(), add_bos=add_bos, special=False)
    new = []
    llm.reset()
    for _ in range(24):
        llm.reset(); llm.eval(seq + new)
        new.append(int(np.argmax(np.array(llm.scores[len(seq) + len(new) - 1]))))
    greedy.append({"prompt": prompt, "prompt_ids": seq, "ids": new})
json.dump({"model": model.split("/")[-1], "llama_cpp_python": __import__("llama_cpp").__version__, "strings": STRINGS,
           "tokens": tokens, "chat": chat, "text": text_path.split("/")[-1], "context": context, "windows": windows,
           "predicted": count, "mean_nll": total / count, "window_nll": per_window, "greedy": greedy}, open(out, "w"), ensure_ascii=False, indent=1)
print(json.dumps({"predicted": count, "mean_nll": total / count}))
