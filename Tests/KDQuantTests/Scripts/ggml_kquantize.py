"""The k-quants', IQ4_NL's and MXFP4's (and, with an importance matrix, Q4_0's, Q4_1's, Q5_0's and Q5_1's) reference: ggml's own quantizer (ggml_quantize_chunk of the libggml-base that llama-cpp-python
0.3.36 builds from source; no importance matrix, as llama_model_quantize without --imatrix), or where
llama-cpp-python is not installed (CI), the SHA-256 of its output recorded in ../Fixtures/kquants-ggml.json for the
same input (whose own hash is recorded beside it, so a changed input is caught rather than compared against stale
bytes).
usage: ggml_kquantize.py compare KEY IN.f32 TYPE N_PER_ROW OURS.bin [IMATRIX.f32]
                                                                       → JSON: source (live|recorded), expected and
                                                                          ours (sha256), differing bytes when live
       ggml_kquantize.py record KEY IN.f32 TYPE N_PER_ROW [IMATRIX.f32] (needs llama-cpp-python; writes the fixture)
IMATRIX.f32: N_PER_ROW importances (one per column), passed to ggml_quantize_chunk as llama-quantize --imatrix passes
an importance matrix's row; the fixture's input hash then covers both files.
       ggml_kquantize.py dequantize GGUF TENSOR OUT.f32                 (a teacher tensor as gguf-py dequantizes it)"""
import ctypes, hashlib, json, os, sys
import numpy as np

TYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14, "iq4_nl": 20, "mxfp4": 39}
SIZES = {"q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q2_K": 84, "q3_K": 110, "q4_K": 144, "q5_K": 176, "q6_K": 210, "iq4_nl": 18, "mxfp4": 17}
BLOCK = {"q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "iq4_nl": 32, "mxfp4": 32}  # elements per block; 256 for the k-quants
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fixtures", "kquants-ggml.json")

def ggml_quantize(x, name, n_per_row, imatrix=None):
    try:
        import llama_cpp
    except ImportError:
        return None
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p]
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = x.size // n_per_row
    out = np.zeros(rows * (n_per_row // BLOCK.get(name, 256)) * SIZES[name], dtype=np.uint8)
    qw = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        assert imatrix.size == n_per_row, (imatrix.size, n_per_row)
        qw = imatrix.ctypes.data
    n = lib.ggml_quantize_chunk(TYPES[name], x.ctypes.data, out.ctypes.data, 0, rows, n_per_row, qw)
    assert n == out.size, (n, out.size)
    return out.tobytes()

def sha(b):
    return hashlib.sha256(b).hexdigest()

def load_fixture():
    return json.load(open(FIXTURE)) if os.path.exists(FIXTURE) else {}

mode = sys.argv[1]
if mode == "dequantize":
    import gguf
    from gguf.quants import dequantize
    path, tensor, out = sys.argv[2:5]
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == tensor)
    dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1).tofile(out)
    sys.exit(0)

key, path, name, n_per_row = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
x = np.fromfile(path, dtype=np.float32)
imatrix_arg = sys.argv[7] if mode == "compare" and len(sys.argv) > 7 else sys.argv[6] if mode == "record" and len(sys.argv) > 6 else None
imatrix = np.fromfile(imatrix_arg, dtype=np.float32) if imatrix_arg else None
entry_key = f"{key} {name}" + (" imatrix" if imatrix is not None else "")
input_bytes = x.tobytes() + (imatrix.tobytes() if imatrix is not None else b"")
if mode == "record":
    ref = ggml_quantize(x, name, n_per_row, imatrix)
    if ref is None:
        sys.exit("record needs llama-cpp-python (pip install llama-cpp-python==0.3.36)")
    fx = load_fixture()
    fx[entry_key] = {"input_sha256": sha(input_bytes), "ggml_sha256": sha(ref)}
    json.dump(dict(sorted(fx.items())), open(FIXTURE, "w"), indent=1)
    sys.exit(0)

ours = open(sys.argv[6], "rb").read()
ref = ggml_quantize(x, name, n_per_row, imatrix)
entry = load_fixture().get(entry_key)
if ref is not None:
    diff = sum(a != b for a, b in zip(ours, ref)) + abs(len(ours) - len(ref))
    print(json.dumps({"source": "live", "expected": sha(ref), "ours": sha(ours), "differing_bytes": diff,
                      "fixture_agrees": entry is not None and entry["ggml_sha256"] == sha(ref)
                                        and entry["input_sha256"] == sha(input_bytes)}))
else:
    if entry is None:
        sys.exit(f"no recorded reference for '{entry_key}' in {FIXTURE}")
    if entry["input_sha256"] != sha(input_bytes):
        sys.exit(f"'{entry_key}': the input is not the one the reference was recorded for (regenerate with record)")
    print(json.dumps({"source": "recorded", "expected": entry["ggml_sha256"], "ours": sha(ours)}))
