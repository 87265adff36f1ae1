#!/usr/bin/env python3
"""What narrowing the residual stream costs before any healing, with and without a rotation first.

Writes copies of a llama-architecture GGUF (F32 tensors) whose residual stream is DIM wide instead of the model's:
  keep    the DIM channels with the largest mean |normalized activation| (Minitron's width axis, distill's
          hidden-dim pruning), norm weights kept;
  pca     one orthogonal rotation of the residual stream for every block (the principal directions of the normalized
          stream at every norm's input over the calibration tokens), then the first DIM directions kept (SliceGPT's
          slicing with a single rotation, so no matrix on the residual path and the file stays plain llama). Each
          norm's weight is folded into the matrices that read it; the folded norms become the constant
          sqrt(dim / DIM); the tied head keeps the table, so the output norm becomes the diagonal that best maps the
          rotated table onto the rotated, weighted head (least squares per column).
Then `distill eval` scores each against the model on DATA's validation split (KL(model ‖ copy), NLL).

usage: Launch/lab/rotate_probe.py MODEL_F32.gguf DATA DIM [DIM…]
Environment: DISTILL_BIN (default .build/release/distill), WINDOWS (16 of 256 tokens), CALIB (8 windows of 256 tokens
from DATA's train split), OUT (a folder to keep the copies in; default a temporary one), and the variants measured in
docs/results.md: UNTIED=1 (an output.weight of its own: the rotation exact), PROTECT=N (the N channels whose output-norm
weight is farthest from the median stay unrotated), BINS=N (rotate only among channels of similar output-norm weight),
EMB_EXP=a (the table scaled by (g / mean g)^a before rotating: 0 the embedding exact, 1 the head exact), SPREAD=1 (a
random rotation inside the kept directions), DROP=i,j,… (blocks removed as well).
e.g. PROTECT=2 EMB_EXP=0.5 WINDOWS=8 Launch/lab/rotate_probe.py \
         Checkpoints/frontier-fkl/ladder/SmolLM2-135M-Instruct.Q4_1.F32.gguf Checkpoints/data/books-teacher-smollm 576 512
"""
import json, os, subprocess, sys, tempfile
import numpy as np
import gguf

model, data, dims = sys.argv[1], sys.argv[2], [int(d) for d in sys.argv[3:]]
r = gguf.GGUFReader(model)
arch = r.fields["general.architecture"].contents()
if arch != "llama":
    sys.exit(f"rotate_probe.py: expected a llama-architecture GGUF, found {arch}")
meta = {k: f.contents() for k, f in r.fields.items()}
L = meta["llama.block_count"]; H = meta["llama.attention.head_count"]; KV = meta["llama.attention.head_count_kv"]
eps = meta["llama.attention.layer_norm_rms_epsilon"]; base = meta.get("llama.rope.freq_base", 10000.0)
for t in r.tensors:
    if t.tensor_type != gguf.GGMLQuantizationType.F32:
        sys.exit(f"rotate_probe.py: expected F32 tensors (an F32 copy), found {t.name} in {t.tensor_type.name}")
W = {t.name: np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)]) for t in r.tensors}
if "output.weight" in W:
    sys.exit("rotate_probe.py: this probe handles tied heads only")
E = W["token_embd.weight"]; D = E.shape[1]; hs = D // H

def shard_tokens(path, n):
    raw = open(path, "rb").read()
    width = int.from_bytes(raw[24:28], "little"); count = int.from_bytes(raw[28:36], "little")
    dt = np.uint16 if width == 2 else np.uint32
    return np.frombuffer(raw, dtype=dt, count=min(n, count), offset=44).astype(np.int64)

calib_windows = int(os.environ.get("CALIB", "8"))
toks = shard_tokens(os.path.join(data, "train.bin"), calib_windows * 256).reshape(calib_windows, 256)

def rms(x): return np.sqrt((x * x).mean(-1, keepdims=True) + eps)

def rope(x):  # [T, heads, hs], adjacent pairs (GGUF-permuted llama)
    T = x.shape[0]; inv = base ** (-np.arange(0, hs, 2) / hs)
    ang = np.arange(T)[:, None] * inv[None, :]; c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]; y = np.empty_like(x)
    y[..., 0::2] = a * c - b * s; y[..., 1::2] = a * s + b * c
    return y

cov = np.zeros((D, D)); absmean = np.zeros(D); count = 0
for w in toks:
    x = E[w].astype(np.float64); T = len(w)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    def record(x):
        global cov, absmean, count
        n = x / rms(x); cov += n.T @ n; absmean += np.abs(n).sum(0); count += len(n)
    for l in range(L):
        p = f"blk.{l}."
        record(x); h = x / rms(x) * W[p + "attn_norm.weight"]
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, H, hs)); k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, KV, hs))
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, KV, hs)
        k = np.repeat(k, H // KV, 1); v = np.repeat(v, H // KV, 1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", s, v).reshape(T, D) @ W[p + "attn_output.weight"].T
        record(x); h = x / rms(x) * W[p + "ffn_norm.weight"]
        g = h @ W[p + "ffn_gate.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    record(x)
g_out = W["output_norm.weight"].astype(np.float64)
protect = int(os.environ.get("PROTECT", "0"))
protected = np.sort(np.argsort(np.abs(g_out - np.median(g_out)))[::-1][:protect])
rest = np.setdiff1d(np.arange(D), protected)
bins = int(os.environ.get("BINS", "1"))
C = cov / count; groups = np.array_split(rest[np.argsort(g_out[rest])], bins)
cols, vals = [], []
for grp in groups:  # rotate only among channels of similar output-norm weight
    ev, vec = np.linalg.eigh(C[np.ix_(grp, grp)])
    for j in range(len(grp)):
        col = np.zeros(D); col[grp] = vec[:, j]; cols.append(col); vals.append(ev[j])
order = np.argsort(vals)[::-1]; evals = np.array(vals)[order]
evecs = np.zeros((D, D)); evecs[protected, np.arange(protect)] = 1
evecs[:, protect:] = np.array(cols).T[:, order]
evals = np.concatenate([np.diag(cov / count)[protected], evals])

def write(path, dim, tensors):
    w = gguf.GGUFWriter(path, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if k == "llama.block_count":
            w.add_uint32(k, L - len([b for b in os.environ.get("DROP", "").split(",") if b])); continue
        if k == "llama.embedding_length":
            w.add_uint32(k, dim); continue
        v = f.contents(); t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY: w.add_array(k, v)
        elif t == gguf.GGUFValueType.STRING: w.add_string(k, v)
        elif t == gguf.GGUFValueType.UINT32: w.add_uint32(k, v)
        elif t == gguf.GGUFValueType.INT32: w.add_int32(k, v)
        elif t == gguf.GGUFValueType.FLOAT32: w.add_float32(k, v)
        elif t == gguf.GGUFValueType.BOOL: w.add_bool(k, v)
        elif t == gguf.GGUFValueType.UINT64: w.add_uint64(k, v)
        else: sys.exit(f"rotate_probe.py: metadata {k} of type {t.name} not handled")
    if "llama.attention.key_length" not in meta:
        w.add_uint32("llama.attention.key_length", hs); w.add_uint32("llama.attention.value_length", hs)
    for name, a in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

def drop_blocks(tensors):
    drop = sorted(int(b) for b in os.environ.get("DROP", "").split(",") if b)
    if not drop:
        return tensors
    keep = [l for l in range(L) if l not in drop]; out = {}
    for name, a in tensors.items():
        if name.startswith("blk."):
            l = int(name.split(".")[1])
            if l in keep:
                out[f"blk.{keep.index(l)}." + name.split(".", 2)[2]] = a
        else:
            out[name] = a
    return out

def keep_copy(dim):
    idx = np.sort(np.argsort(absmean)[::-1][:dim]); out = {}
    if dim == D:
        return dict(W)
    for name, a in W.items():
        if name == "token_embd.weight" or name.endswith("_norm.weight") or name == "output_norm.weight":
            out[name] = a[..., idx]
        elif name.endswith(("attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight", "ffn_up.weight")):
            out[name] = a[:, idx]
        elif name.endswith(("attn_output.weight", "ffn_down.weight")):
            out[name] = a[idx, :]
        else:
            out[name] = a
    return out

def pca_copy(dim):
    Q = evecs[:, :dim].copy(); c = np.sqrt(D / dim); out = {}
    if os.environ.get("SPREAD"):  # a random rotation inside the kept rotated directions: same function, spread scales
        n = dim - protect; R, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((n, n)))
        Q[:, protect:] = Q[:, protect:] @ R
    a = float(os.environ.get("EMB_EXP", "0")); scale = np.ones(D)
    scale[rest] = (g_out[rest] / np.mean(g_out[rest])) ** a  # a = 1: the head exact, the embedding off by g / mean(g)
    Er = (E.astype(np.float64) * scale) @ Q; out["token_embd.weight"] = Er
    head = (E.astype(np.float64) * W["output_norm.weight"]) @ Q
    diag = (Er * head).sum(0) / (Er * Er).sum(0)
    out["output_norm.weight"] = c * diag
    if os.environ.get("UNTIED"):
        out["output.weight"] = head; out["output_norm.weight"] = np.full(dim, c)
    for l in range(L):
        p = f"blk.{l}."
        for norm, mats in (("attn_norm", ("attn_q", "attn_k", "attn_v")), ("ffn_norm", ("ffn_gate", "ffn_up"))):
            g = W[p + norm + ".weight"].astype(np.float64)
            for m in mats:
                out[p + m + ".weight"] = (W[p + m + ".weight"] * g) @ Q
            out[p + norm + ".weight"] = np.full(dim, c)
        for m in ("attn_output", "ffn_down"):
            out[p + m + ".weight"] = Q.T @ W[p + m + ".weight"]
    return out

distill = os.environ.get("DISTILL_BIN", ".build/release/distill")
windows = os.environ.get("WINDOWS", "16")
outdir = os.environ.get("OUT") or tempfile.mkdtemp(prefix="rotate_probe.")
os.makedirs(outdir, exist_ok=True)
kept = [float(evals[:d].sum() / evals.sum()) for d in dims]
print(f"calibration: {toks.size} tokens; energy kept by the first {dims} principal directions: "
      + ", ".join(f"{k:.5f}" for k in kept), flush=True)
for d in dims:
    for kind, build in (("keep", keep_copy), ("pca", pca_copy)):
        if d == D and kind == "keep" and not os.environ.get("DROP"):
            continue
        path = os.path.join(outdir, f"{kind}{d}.gguf"); write(path, d, drop_blocks(build(d)))
        res = subprocess.run([distill, "eval", "--model", path, "--teacher", model, "--data", data,
                              "--context", "256", "--max-windows", windows, "--json"], capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"rotate_probe.py: distill eval failed on {path}: {res.stderr.strip()}")
        j = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps({"dim": d, "kind": kind, **j}), flush=True)
