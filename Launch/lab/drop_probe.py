#!/usr/bin/env python3
"""What removing parts of a GGUF model costs before any healing: for each spec, a copy of MODEL with the chosen
tensors' bytes zeroed, scored by `distill eval` against the unmodified MODEL on DATA's validation split (KL(model ‖
copy) and its NLL beside the model's).

A zeroed attn_output leaves a block's attention out of the residual stream (an attention-free block, as llama.cpp's
`deci` architecture stores one); zeroed attn_output and ffn_down leave out the whole block (a depth cut). Zero bytes
are exact zeros in every GGML block type (the scales are zero too).

usage: Launch/lab/drop_probe.py MODEL DATA SPEC...   SPEC: "attn:4,6 block:13,14" (block indices; either part optional)
       e.g. Launch/lab/drop_probe.py Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf Checkpoints/data/books-smollm \\
            block:13,14,15,16,17,18 "block:17,14,16 attn:29,6,22,23"
Environment: DISTILL_BIN (default .build/release/distill), WINDOWS (default 16 windows of 256 tokens), PRECISION (bf16).
Needs gguf-py (pip install gguf). Run from the repository root.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def parse(spec):
    attn, block = set(), set()
    for part in spec.split():
        kind, _, ids = part.partition(":")
        if kind not in ("attn", "block"):
            sys.exit(f"drop_probe.py: expected attn:N,... or block:N,..., found '{part}'")
        try:
            s = {int(x) for x in ids.split(",") if x}
        except ValueError:
            sys.exit(f"drop_probe.py: expected block indices, found '{ids}'")
        (attn if kind == "attn" else block).update(s)
    return attn, block


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().split("\n\n")[2])
    model, data, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    import gguf  # gguf-py, the independent reader the tests use

    reader = gguf.GGUFReader(model)
    tensors = {t.name: t for t in reader.tensors}
    binary = os.environ.get("DISTILL_BIN", ".build/release/distill")
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "probe.gguf")
        for spec in specs:
            attn, block = parse(spec)
            names = [f"blk.{b}.attn_output.weight" for b in sorted(attn | block)] + [f"blk.{b}.ffn_down.weight" for b in sorted(block)]
            missing = [n for n in names if n not in tensors]
            if missing:
                sys.exit(f"drop_probe.py: {model} has no tensor {missing[0]}")
            shutil.copyfile(model, copy)
            with open(copy, "r+b") as f:
                for n in names:
                    f.seek(int(tensors[n].data_offset))
                    f.write(b"\0" * int(tensors[n].n_bytes))
            out = subprocess.run([binary, "eval", "--model", copy, "--teacher", model, "--data", data, "--context", "256",
                                  "--max-windows", os.environ.get("WINDOWS", "16"), "--precision", os.environ.get("PRECISION", "bf16"),
                                  "--json"], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"drop_probe.py: distill eval failed on '{spec}': {out.stderr.strip().splitlines()[-1:]}")
            j = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{spec:60s} KL {j['kl_teacher_model']:.4f}  NLL {j['mean_nll']:.4f} (+{j['mean_nll'] - j['teacher_mean_nll']:.4f})"
                  f"  top-1 {100 * j['top1_agreement']:.1f}%", flush=True)


if __name__ == "__main__":
    main()
