#!/usr/bin/env python3
"""Structure-aware fuzzing of the files distill reads, through its CLI.

usage: Launch/fuzz.py [--mutants N] [--seed S] [--formats gguf,safetensors,config,tokenizer,yaml,shards,checkpoint,cache]
                      [--distill BIN] [--keep DIR] [--timeout SECONDS] [--jobs N] [--json]

For each format, a small valid seed is written here with independent writers (gguf-py for GGUF, the `safetensors`
package, json, plain text for YAML), then N mutants are made from it — integer fields set to boundary values
(0, 1, 2^31, 2^32 − 1, 2^63, 2^64 − 1, …), truncation at every structural boundary, JSON values replaced by values
of other types and sizes, random bytes — each seeded by (seed, format, index) so a mutant is reproduced by its number.
`shards` are `distill prepare`'s train.bin and prepare.json, `checkpoint` every file of a step folder that a 2-step run
wrote, `cache` every file of a `distill teacher-cache` folder (a byte-level teacher's top-8 rows). Every mutant is fed to the commands that read the format (`distill inspect`, `distill eval`, `distill train
--dry-run`, a one-step `distill train` on the shards or from the cache, `distill checkpoint verify` and `distill train --resume`) and
each run is classified:

  refused   non-zero exit and a one-line message on stderr ("error: …")
  accepted  exit 0 (the mutation did not matter, e.g. a changed weight)
  crash     killed by a signal (a Swift trap is SIGILL/SIGTRAP), a runtime "Fatal error", or an AddressSanitizer report
            (with a binary built by `swift build --sanitize address --build-path .build-asan`)
  hang      still running after --timeout seconds
  silent    non-zero exit without a message

Prints a table per format; exits 1 if any run crashed, hung or failed silently, and with --keep copies those
mutants (named format-index) to DIR. A CI-sized run (a few hundred mutants per format) is part of the test suite;
`Launch/fuzz.py --mutants 10000` is the long run.
"""
import argparse, concurrent.futures, json, os, pathlib, random, shutil, struct, subprocess, sys, tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORMATS = ["gguf", "safetensors", "config", "tokenizer", "yaml", "shards", "checkpoint", "cache"]
BOUNDARY64 = [0, 1, 2, 7, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**48, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
BOUNDARY32 = [0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 30, 31, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, "
        "it was the epoch of belief, it was the epoch of incredulity.\n") * 4


def byte_tokens():
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


MERGES = ["Ġ t", "h e", "Ġt he", "i t", "Ġ w", "a s"]


def vocabulary():
    toks = byte_tokens()
    for m in MERGES:
        toks.append(m.replace(" ", ""))
    toks.append("<|endoftext|>")
    return toks


# ---------------------------------------------------------------------------------------------------------------- seeds
def write_gguf_seed(path):
    import numpy as np
    import gguf
    from gguf.quants import quantize
    rng = np.random.default_rng(7)
    toks = vocabulary()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2); w.add_context_length(64); w.add_embedding_length(64); w.add_feed_forward_length(128)
    w.add_head_count(4); w.add_head_count_kv(2); w.add_rope_freq_base(10000.0); w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("smollm"); w.add_token_list(toks)
    w.add_token_types([1] * (len(toks) - 1) + [3]); w.add_token_merges(MERGES)
    w.add_bos_token_id(len(toks) - 1); w.add_eos_token_id(len(toks) - 1); w.add_add_bos_token(False)

    def mat(name, rows, cols, kind):
        x = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        if kind == "q8_0":
            w.add_tensor(name, quantize(x, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif kind == "q4_0":
            w.add_tensor(name, quantize(x, gguf.GGMLQuantizationType.Q4_0), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            w.add_tensor(name, x)
    mat("token_embd.weight", len(toks), 64, "q8_0")
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    for b in range(2):
        w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(64, np.float32))
        w.add_tensor(f"blk.{b}.ffn_norm.weight", np.ones(64, np.float32))
        mat(f"blk.{b}.attn_q.weight", 64, 64, "q8_0"); mat(f"blk.{b}.attn_k.weight", 32, 64, "q4_0")
        mat(f"blk.{b}.attn_v.weight", 32, 64, "f32"); mat(f"blk.{b}.attn_output.weight", 64, 64, "q8_0")
        mat(f"blk.{b}.ffn_gate.weight", 128, 64, "q4_0"); mat(f"blk.{b}.ffn_up.weight", 128, 64, "q8_0")
        mat(f"blk.{b}.ffn_down.weight", 64, 128, "f32")
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def write_hf_seed(folder, byte_level=False):
    """A tiny Llama HF folder: the BPE vocabulary above with its tokenizer.json, or (byte_level) a 256-token model
    without one, which distill reads as bytes."""
    import numpy as np
    from safetensors.numpy import save_file
    rng = np.random.default_rng(8)
    toks = [chr(b) for b in range(256)] if byte_level else vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(toks),
           "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
           "bos_token_id": len(toks) - 1, "eos_token_id": len(toks) - 1, "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    t = {"model.embed_tokens.weight": (len(toks), 64), "model.norm.weight": (64,)}
    for b in range(2):
        p = f"model.layers.{b}."
        t.update({p + "input_layernorm.weight": (64,), p + "post_attention_layernorm.weight": (64,),
                  p + "self_attn.q_proj.weight": (64, 64), p + "self_attn.k_proj.weight": (32, 64),
                  p + "self_attn.v_proj.weight": (32, 64), p + "self_attn.o_proj.weight": (64, 64),
                  p + "mlp.gate_proj.weight": (128, 64), p + "mlp.up_proj.weight": (128, 64), p + "mlp.down_proj.weight": (64, 128)})
    arrays = {k: (np.ones(s, np.float32) if len(s) == 1 else (rng.standard_normal(s) * 0.05).astype(np.float32)) for k, s in t.items()}
    arrays["model.layers.0.mlp.up_proj.weight"] = arrays["model.layers.0.mlp.up_proj.weight"].astype(np.float16)
    save_file(arrays, str(folder / "model.safetensors"))
    if byte_level:
        return
    vocab = {tok: i for i, tok in enumerate(toks)}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": len(toks) - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False, "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": MERGES}}
    (folder / "tokenizer.json").write_text(json.dumps(tok, indent=1))


YAML_SEED = """\
model:
  layers: 1
  dim: 32
  heads: 2
  kv_heads: 2
  ffn_dim: 64
  vocab_size: 256
  max_seq_len: 32
train:
  steps: 2
  micro_batch: 2
  grad_accum: 1
  seq_len: 16
  seed: 1
  threads: 1
optimizer:
  lr: 1.0e-3
  warmup_steps: 1
data:
  train: [{text}]
  val_fraction: 0.1
checkpoint:
  dir: {out}
  every: 2
  keep: 1
"""


# ------------------------------------------------------------------------------------------------------------ mutations
def gguf_fields(data):
    """(offset, width, kind) of the GGUF header's integer fields, its structural boundaries and where the header ends."""
    fields, cuts = [(4, 4, "version"), (8, 8, "tensor count"), (16, 8, "metadata count")], [0, 4, 8, 16, 24]
    n_t, n_kv = struct.unpack_from("<QQ", data, 8)
    o = 24

    def string(o):
        fields.append((o, 8, "string length"))
        n = struct.unpack_from("<Q", data, o)[0]
        return o + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def value(o, t):
        if t == 8:
            return string(o)
        if t == 9:
            fields.append((o, 4, "array element type")); et = struct.unpack_from("<I", data, o)[0]
            fields.append((o + 4, 8, "array length")); n = struct.unpack_from("<Q", data, o + 4)[0]
            o += 12
            for _ in range(n):
                o = value(o, et)
            return o
        if t in (4, 5, 10, 11):
            fields.append((o, sizes[t], "integer value"))
        return o + sizes[t]

    for _ in range(n_kv):
        cuts.append(o)
        o = string(o)
        fields.append((o, 4, "value type"))
        t = struct.unpack_from("<I", data, o)[0]
        o = value(o + 4, t)
    for _ in range(n_t):
        cuts.append(o)
        o = string(o)
        fields.append((o, 4, "dimension count")); nd = struct.unpack_from("<I", data, o)[0]; o += 4
        for _ in range(nd):
            fields.append((o, 8, "dimension")); o += 8
        fields.append((o, 4, "tensor type")); o += 4
        fields.append((o, 8, "tensor offset")); o += 8
    cuts.append(o)
    return fields, cuts, o


def mutate_gguf(data, rnd):
    fields, cuts, header_end = gguf_fields(data)
    b = bytearray(data)
    kind = rnd.random()
    if kind < 0.55:  # one or two integer fields at boundary values
        for _ in range(rnd.choice([1, 1, 2])):
            off, width, _ = rnd.choice(fields)
            old = int.from_bytes(b[off:off + width], "little")
            pool = (BOUNDARY64 if width == 8 else BOUNDARY32) + [old + 1, max(old - 1, 0), old * 2]
            v = rnd.choice(pool) % (1 << (8 * width))
            b[off:off + width] = v.to_bytes(width, "little")
        return bytes(b)
    if kind < 0.75:  # truncation at (or next to) a structural boundary, or inside the data
        cut = rnd.choice(cuts + [header_end + rnd.randrange(1, 64), len(b) - rnd.randrange(1, 64), len(b) // 2])
        cut = max(0, min(len(b) - 1, cut + rnd.choice([0, 0, -1, 1])))
        return bytes(b[:cut])
    n = rnd.choice([1, 2, 4, 8])  # random bytes in the header (metadata and tensor infos), now and then in the data
    hi = header_end if rnd.random() < 0.85 else len(b)
    for _ in range(n):
        b[rnd.randrange(0, hi)] = rnd.randrange(256)
    return bytes(b)


def json_paths(x, path=()):
    yield path, x
    if isinstance(x, dict):
        for k, v in x.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x[:64]):  # the first elements of long lists stand for the rest
            yield from json_paths(v, path + (i,))


REPLACEMENTS = [0, -1, 1, 2**31, 2**32 - 1, 2**53, 2**63 - 1, 2**63, 2**64, -2**63, 10**30, 1e308, -1e308, 0.5, -0.0,
                "", "x", "F64", "I8", "BPE", "Unigram", "WordPiece", None, True, False, [], [0], [-1, 2**63], {}, "\u0000", "é" * 3]


def mutate_json(obj, rnd, extra=0.0):
    obj = json.loads(json.dumps(obj))
    paths = [p for p, _ in json_paths(obj) if p]
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        p = rnd.choice(paths)
        parent = obj
        try:
            for k in p[:-1]:
                parent = parent[k]
            key = p[-1]
            r = rnd.random()
            if r < 0.15 and isinstance(parent, dict):
                parent.pop(key, None)
            elif r < 0.25 and isinstance(parent, list):
                parent.append(rnd.choice(REPLACEMENTS))
            else:
                parent[key] = rnd.choice(REPLACEMENTS)
        except (KeyError, IndexError, TypeError):
            pass
    return obj


def mutate_text(data, rnd, structure):
    """Truncation at a structural boundary, a few random bytes, or a chunk duplicated."""
    b = bytearray(data)
    r = rnd.random()
    if r < 0.3:
        cut = rnd.choice(structure) if structure and rnd.random() < 0.7 else rnd.randrange(0, len(b))
        return bytes(b[:max(0, cut + rnd.choice([0, -1, 1]))])
    if r < 0.8:
        for _ in range(rnd.choice([1, 2, 4])):
            b[rnd.randrange(len(b))] = rnd.choice([0, 0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c, 0x0a, 0x20, 0xff, rnd.randrange(256)])
        return bytes(b)
    i = rnd.randrange(len(b)); j = min(len(b), i + rnd.randrange(1, 200))
    return bytes(b[:j] + b[i:j] + b[j:])


def mutate_safetensors(data, rnd):
    n = struct.unpack_from("<Q", data, 0)[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    r = rnd.random()
    if r < 0.15:  # the length field
        v = rnd.choice(BOUNDARY64 + [n + 1, n - 1, len(data), len(data) - 8])
        return struct.pack("<Q", v % 2**64) + data[8:]
    if r < 0.3:  # truncation at a structural boundary
        cut = rnd.choice([0, 4, 8, 9, 8 + n // 2, 8 + n, 8 + n + 1, len(data) - 1, len(data) - 4, len(data) // 2])
        return data[:max(0, cut)]
    if r < 0.45:
        return mutate_text(data, rnd, [8, 8 + n])
    h = mutate_json(header, rnd)
    try:
        text = json.dumps(h).encode()
    except (TypeError, ValueError):
        text = b"{"
    return struct.pack("<Q", len(text)) + text + body


def checksum(data):
    """distill's file checksum (KDCore/Hash.swift fileChecksum): 64-bit FNV-style over little-endian words, per 16 MiB
    chunk with its tail, then the length."""
    h, prime, mask = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1
    for c in range(0, len(data), 1 << 24):
        chunk = data[c:c + (1 << 24)]
        words = len(chunk) // 8
        for (w,) in struct.iter_unpack("<Q", chunk[:8 * words]):
            h = ((h ^ w) * prime) & mask
        if len(chunk) % 8:
            h = ((h ^ int.from_bytes(chunk[8 * words:], "little")) * prime) & mask
    return format(((h ^ len(data)) * prime) & mask, "x")


def mutate_ints(data, rnd):
    """An aligned 4- or 8-byte integer of a binary file set to a boundary value (counts, offsets, ids, lengths)."""
    b = bytearray(data)
    w = rnd.choice([4, 8])
    if len(b) < w:
        return bytes(b[:-1])
    off = rnd.randrange(0, len(b) - w + 1) // w * w
    b[off:off + w] = (rnd.choice(BOUNDARY64 if w == 8 else BOUNDARY32) % (1 << (8 * w))).to_bytes(w, "little")
    return bytes(b)


def mutate_shard(data, rnd):
    """distill prepare's shard: header fields (version, vocabulary, hash, width, token and document counts) at boundary
    values, truncation at the header's end and inside each section, or random bytes anywhere (tokens, mask, starts)."""
    b = bytearray(data)
    if len(b) < 44:
        return bytes(b[:-1])
    n, docs = struct.unpack_from("<QQ", b, 28)
    width = struct.unpack_from("<I", b, 24)[0]
    r = rnd.random()
    if r < 0.45:
        off, w = rnd.choice([(8, 4), (12, 4), (16, 8), (24, 4), (28, 8), (36, 8)])
        old = int.from_bytes(b[off:off + w], "little")
        v = rnd.choice((BOUNDARY64 if w == 8 else BOUNDARY32) + [old + 1, max(old - 1, 0)]) % (1 << (8 * w))
        b[off:off + w] = v.to_bytes(w, "little")
        return bytes(b)
    if r < 0.65:
        cuts = [0, 8, 43, 44, 44 + n * width, 44 + n * width + n, len(b) - 8, len(b) - 1]
        return bytes(b[:max(0, rnd.choice(cuts))])
    for _ in range(rnd.choice([1, 2, 8])):  # a token past the vocabulary, a mask byte, a document start out of order
        i = rnd.randrange(44, len(b))
        b[i] = rnd.choice([0xff, 0x80, 0x01, 0x00, rnd.randrange(256)])
    return bytes(b)


# ---------------------------------------------------------------------------------------------------------------- runner
def classify(proc_rc, stderr, timed_out):
    if timed_out:
        return "hang"
    if proc_rc < 0 or any(m in stderr for m in ("Fatal error", "Program crashed", "Illegal instruction", "AddressSanitizer")):
        return "crash"
    if proc_rc == 0:
        return "accepted"
    lines = [l for l in stderr.strip().splitlines() if l.strip() and not l.startswith("warning:")]
    return "refused" if lines and lines[-1].lower().startswith("error:") else "silent"


def run(cmd, timeout, cwd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, cwd=cwd,
                           env={**os.environ, "SWIFT_BACKTRACE": "enable=no"})
        return classify(p.returncode, p.stderr, False), p.stderr.strip().splitlines()[-1:] if p.stderr.strip() else []
    except subprocess.TimeoutExpired:
        return "hang", []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mutants", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--formats", default=",".join(FORMATS))
    built = [ROOT / ".build/release/distill", ROOT / ".build/debug/distill"]
    ap.add_argument("--distill", default=str(next((b for b in built if b.exists()), built[1])),
                    help="the binary to feed (default: the release build, else the debug build)")
    ap.add_argument("--keep", default=None, help="folder for the mutants that crashed, hung or failed silently")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants run at once")
    a = ap.parse_args()
    a.distill = os.path.abspath(a.distill)  # the commands run from the scratch folder
    if not os.access(a.distill, os.X_OK):
        sys.exit(f"fuzz: expected an executable distill at {a.distill} (swift build), found none")
    formats = a.formats.split(",")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        sys.exit(f"fuzz: unknown formats {sorted(unknown)} (expected some of {', '.join(FORMATS)})")
    work = pathlib.Path(tempfile.mkdtemp(prefix="distill-fuzz-"))
    results = {}
    try:
        text = work / "text.txt"; text.write_text(TEXT)
        seed_gguf = work / "seed.gguf"; write_gguf_seed(seed_gguf)
        seed_hf = work / "seed-hf"; write_hf_seed(seed_hf)
        gguf_bytes, d = seed_gguf.read_bytes(), a.distill
        docs = work / "docs.txt"; docs.write_text("".join(f"{TEXT[i * 40:(i + 1) * 40 + 200]}\n%\n" for i in range(10)))
        seed_shards = work / "seed-shards"
        seed_ck = work / "seed-ck"
        teacher = work / "teacher256"
        write_hf_seed(teacher, byte_level=True)
        with_teacher = lambda yaml, t: yaml.replace("data:\n", f"teacher:\n  path: {t}\ndata:\n")
        if {"shards", "checkpoint"} & set(formats):
            subprocess.run([d, "prepare", str(docs), "--output", str(seed_shards), "--separator", "%", "--val-fraction", "0.3"],
                           check=True, capture_output=True)
            # a distillation run: its checkpoint records the teacher's files and hashes, checked at resume
            (work / "base.yaml").write_text(with_teacher(YAML_SEED.format(out=seed_ck, text=text), teacher))
            subprocess.run([d, "train", "--config", str(work / "base.yaml"), "--sample-tokens", "0"], check=True, capture_output=True)
            step_dir = sorted(p for p in seed_ck.iterdir() if p.name.startswith("step_"))[-1]
        seed_cache = work / "seed-cache"
        if "cache" in formats:
            live = YAML_SEED.format(out=work / "live-out", text=text).replace("data:\n", f"teacher:\n  path: {work / 'teacher256'}\n  exchange: topk\n  top_k: 8\ndata:\n")
            (work / "live.yaml").write_text(live)
            subprocess.run([d, "teacher-cache", "--config", str(work / "live.yaml"), "--out", str(seed_cache), "--threads", "1"],
                           check=True, capture_output=True)

        def one(fmt, i):
            """Makes mutant i of `fmt` in a folder of its own, runs the commands that read it; (outcomes, worst)."""
            rnd = random.Random(f"{a.seed}/{fmt}/{i}")
            m = work / f"{fmt}-{i}"
            eval_cmd = lambda model: [d, "eval", "--model", str(model), "--text", str(text), "--context", "32", "--max-windows", "2"]
            if fmt == "gguf":
                m = m.with_suffix(".gguf")
                m.write_bytes(mutate_gguf(gguf_bytes, rnd))
                cmds = [[d, "inspect", str(m)], eval_cmd(m)]
            elif fmt == "yaml":
                m.mkdir()
                src = YAML_SEED.format(out=m / "out", text=text).encode()
                (m / "c.yaml").write_bytes(mutate_text(src, rnd, [j for j, c in enumerate(src) if c == 0x0a]))
                cmds = [[d, "train", "--config", str(m / "c.yaml"), "--dry-run"]]
            elif fmt == "shards":
                shutil.copytree(seed_shards, m / "data")
                f = m / "data" / rnd.choice(["train.bin", "train.bin", "prepare.json"])
                raw = f.read_bytes()
                if f.suffix == ".json":
                    f.write_bytes(mutate_text(raw, rnd, []) if rnd.random() < 0.3 else json.dumps(mutate_json(json.loads(raw), rnd)).encode())
                else:
                    f.write_bytes(mutate_shard(raw, rnd))
                (m / "c.yaml").write_text(YAML_SEED.format(out=m / "out", text=m / "data"))
                cmds = [[d, "train", "--config", str(m / "c.yaml"), "--steps", "1", "--sample-tokens", "0"]]
            elif fmt == "cache":
                shutil.copytree(seed_cache, m / "cache")
                f = rnd.choice(sorted(p for p in (m / "cache").rglob("*") if p.is_file()))
                raw = f.read_bytes()
                if f.suffix == ".json" and rnd.random() < 0.7:
                    try:
                        f.write_bytes(json.dumps(mutate_json(json.loads(raw), rnd)).encode())
                    except ValueError:
                        f.write_bytes(mutate_text(raw, rnd, []))
                elif raw:
                    f.write_bytes(mutate_text(raw, rnd, [8, 16, 24, 32, 64]) if rnd.random() < 0.5 else mutate_ints(raw, rnd))
                else:
                    f.write_bytes(b"\x01")
                cfg = YAML_SEED.format(out=m / "out", text=text).replace("data:\n", f"teacher:\n  cache: {m / 'cache'}\ndata:\n")
                (m / "c.yaml").write_text(cfg)
                cmds = [[d, "train", "--config", str(m / "c.yaml"), "--steps", "1", "--sample-tokens", "0"]]
            elif fmt == "checkpoint":
                shutil.copytree(step_dir, m / step_dir.name)
                shutil.copytree(teacher, m / "teacher")
                files = sorted(p for p in (m / step_dir.name).iterdir() if p.is_file())
                # now and then the teacher's weights change instead (a corrupted teacher file mid-run: its hash no
                # longer matches the one the checkpoint recorded)
                f = rnd.choice(files) if rnd.random() < 0.85 else m / "teacher" / "model.safetensors"
                raw = f.read_bytes()
                if f.suffix == ".safetensors":
                    f.write_bytes(mutate_safetensors(raw, rnd))
                elif f.suffix == ".json" and rnd.random() < 0.7:
                    try:
                        f.write_bytes(json.dumps(mutate_json(json.loads(raw), rnd)).encode())
                    except ValueError:
                        f.write_bytes(mutate_text(raw, rnd, []))
                else:
                    f.write_bytes(mutate_text(raw, rnd, [])) if raw else f.write_bytes(b"\xff")
                # most mutants get checksums that match, so they reach the readers behind the checksum check
                sums = m / step_dir.name / "checksums.json"
                if f != sums and f.parent.name != "teacher" and rnd.random() < 0.7:
                    table = json.loads(sums.read_text())
                    if f.name in table:
                        table[f.name] = {"bytes": str(len(f.read_bytes())), "checksum": checksum(f.read_bytes())}
                        sums.write_text(json.dumps(table))
                (m / "c.yaml").write_text(with_teacher(YAML_SEED.format(out=m / "out", text=text), m / "teacher"))
                cmds = [[d, "checkpoint", "verify", str(m / step_dir.name)],
                        [d, "train", "--config", str(m / "c.yaml"), "--resume", str(m / step_dir.name), "--steps", "3", "--sample-tokens", "0"]]
            else:
                shutil.copytree(seed_hf, m)
                if fmt == "safetensors":
                    f = m / "model.safetensors"; f.write_bytes(mutate_safetensors(f.read_bytes(), rnd))
                else:
                    f = m / ("config.json" if fmt == "config" else "tokenizer.json")
                    raw = f.read_bytes()
                    f.write_bytes(mutate_text(raw, rnd, []) if rnd.random() < 0.2 else json.dumps(mutate_json(json.loads(raw), rnd)).encode())
                cmds = [[d, "inspect", str(m)], eval_cmd(m)]
            outcomes, worst = [], None
            for c in cmds:
                outcome, last = run(c, a.timeout, work)
                outcomes.append(outcome)
                if outcome in ("crash", "hang", "silent"):
                    worst = {"mutant": i, "outcome": outcome, "command": c[1], "stderr": last}
            if worst and a.keep:
                keep = pathlib.Path(a.keep); keep.mkdir(parents=True, exist_ok=True)
                dest = keep / m.name
                shutil.copytree(m, dest, dirs_exist_ok=True) if m.is_dir() else shutil.copy(m, dest)
            shutil.rmtree(m, ignore_errors=True) if m.is_dir() else m.unlink()
            return outcomes, worst

        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            for fmt in formats:
                counts = {"refused": 0, "accepted": 0, "crash": 0, "hang": 0, "silent": 0}
                bad = []
                for outcomes, worst in pool.map(lambda i: one(fmt, i), range(a.mutants)):
                    for o in outcomes:
                        counts[o] += 1
                    if worst:
                        bad.append(worst)
                results[fmt] = {"mutants": a.mutants, "runs": sum(counts.values()), **counts, "bad": bad[:20]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"fuzz: seed {a.seed}, {a.mutants} mutants per format, {a.distill}")
        print("| format | mutants | runs | refused with a message | accepted | crashes | hangs | silent |")
        print("|---|---|---|---|---|---|---|---|")
        for f, r in results.items():
            print(f"| {f} | {r['mutants']} | {r['runs']} | {r['refused']} | {r['accepted']} | {r['crash']} | {r['hang']} | {r['silent']} |")
        for f, r in results.items():
            for b in r["bad"]:
                print(f"  {f} mutant {b['mutant']}: {b['outcome']} in `distill {b['command']}`: {' '.join(b['stderr'])[:200]}")
    sys.exit(1 if any(r["crash"] or r["hang"] or r["silent"] for r in results.values()) else 0)


if __name__ == "__main__":
    main()
