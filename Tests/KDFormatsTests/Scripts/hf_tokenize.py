#!/usr/bin/env python3
"""Reference tokenization with Hugging Face `tokenizers`, built from a GGUF file's vocabulary and merges.

usage: hf_tokenize.py MODEL.gguf PRE STRINGS.json [SAVE_DIR]   (PRE: smollm | gpt-2 | llama-bpe | qwen2)
Prints one JSON array of ids per input string; with SAVE_DIR, also writes SAVE_DIR/tokenizer.json (control tokens
added as special tokens).
"""
import json, sys
import gguf
from tokenizers import Tokenizer, Regex, models, pre_tokenizers

path, pre, strings = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3], encoding="utf-8"))
r = gguf.GGUFReader(path)
tokens = r.fields["tokenizer.ggml.tokens"].contents()
merges = [tuple(m.split(" ", 1)) for m in r.fields["tokenizer.ggml.merges"].contents()]
tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
byte = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
tok.pre_tokenizer = {
    "smollm": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "gpt-2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "llama-bpe": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"), byte]),
    "qwen2": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), behavior="isolated"), byte]),
}[pre]
if len(sys.argv) > 4:
    from tokenizers import AddedToken
    types = r.fields["tokenizer.ggml.token_type"].contents()
    tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
    tok.save(sys.argv[4] + "/tokenizer.json")
for s in strings:
    print(json.dumps(tok.encode(s, add_special_tokens=False).ids))
