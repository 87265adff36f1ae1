#!/usr/bin/env python3
"""Encodes strings with Hugging Face `tokenizers` loading a tokenizer.json (e.g. one distill wrote).

usage: hf_from_json.py TOKENIZER.json STRINGS.json     → one JSON array of ids per string
"""
import json, sys
from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
for s in json.load(open(sys.argv[2], encoding="utf-8")):
    print(json.dumps(tok.encode(s, add_special_tokens=False).ids))
