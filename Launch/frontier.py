#!/usr/bin/env python3
"""The size-quality-speed frontier: a teacher quantized by llama.cpp's own quantizer, beside trained students.

usage: Launch/frontier.py --teacher T.gguf [--student NAME=S.gguf ...] --text NAME=PATH [--text ...] --out DIR
       [--ladder "Q8_0 Q4_K_M ..."] [--context 256] [--windows 32] [--rounds 3] [--prompt 256] [--generate 64]
(Launch/frontier.sh sets everything up and calls this.)

For every model — the teacher, the teacher requantized by llama.cpp (llama_model_quantize from an F32 copy of the
teacher file, as a user would make the free alternative; cached in DIR/ladder/; an entry TYPE/TABLE also forces the
embedding table and tied head to TABLE as llama-quantize's --token-embedding-type/--output-tensor-type do, and
TYPE/TABLE/pure adds its --pure; a trailing +imatrix quantizes with an importance matrix of the teacher on
--imatrix-text, through llama.cpp's own llama-imatrix and llama-quantize in --llamacpp-tools), and each student GGUF —
on every text:
  - llama.cpp's mean NLL over the same non-overlapping windows of --context tokens (BOS first when the file asks for
    one), and the difference to the teacher's;
  - KL(teacher || model) and top-1 agreement per predicted token, from llama.cpp's logits of both on the same windows;
  - `distill eval`'s NLL of the same file and text (n/a where distill cannot read a type: the IQ2/IQ3 grids, for one);
and llama.cpp's speed on --threads (2) threads: a --prompt-token prompt (tokens/s) then --generate greedy tokens
(tokens/s), rounds interleaved over the models, medians (--rounds 0: none). Writes DIR/frontier.json, DIR/frontier.md
(the table), DIR/frontier.svg (bytes vs NLL and generation speed vs NLL) and DIR/frontier.html (both). A model's
quality figures on a text are kept in DIR/cache/ and reused while its file, the teacher's and the text are unchanged,
so adding a student scores only it; speeds are measured on every run.
Needs llama-cpp-python (0.3.36, as the references use), gguf-py and numpy.
"""
import argparse, ctypes, hashlib, html, json, os, re, statistics, subprocess, sys, time
import numpy as np
import gguf
import llama_cpp
import llama_cpp.llama_cpp as lc
from llama_cpp import Llama

# no weight repacking: its AMX kernels die of SIGILL on virtual CPUs that report AMX (see Launch/lab/check_llamacpp.py)
_defaults = lc.llama_model_default_params
def _no_repack():
    p = _defaults(); p.use_extra_bufts = False; return p
lc.llama_model_default_params = _no_repack


def fail(msg):
    sys.exit(f"frontier: {msg}")


def quantize(src, dest, ftype_name, table=None, pure=False):
    """llama.cpp's quantizer, written to dest.part and renamed when whole; `table` is llama-quantize's
    --token-embedding-type and --output-tensor-type (a ggml type name), `pure` its --pure (no per-tensor mixing)."""
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, ftype_name, None)
    if p.ftype is None:
        fail(f"expected a llama.cpp type (Q8_0, Q4_K_M, Q3_K_M, IQ4_NL, ...), found {ftype_name.split('_FTYPE_')[-1]}")
    if table is not None:
        t = getattr(llama_cpp, "GGML_TYPE_" + table, None)
        if t is None:
            fail(f"expected a ggml type for the table (Q8_0, Q4_0, IQ4_NL, ...), found {table}")
        p.token_embedding_type = t
        p.output_tensor_type = t
    p.pure = pure
    p.allow_requantize = True
    part = dest + ".part"
    if llama_cpp.llama_model_quantize(src.encode(), part.encode(), ctypes.byref(p)) != 0:
        fail(f"llama.cpp could not quantize {src} to {ftype_name}")
    os.replace(part, dest)


def ladder_entry(entry):
    """A ladder entry: a llama.cpp preset (IQ4_NL), optionally with the embedding table and head forced to a type as
    llama-quantize's --token-embedding-type/--output-tensor-type do (IQ4_NL/IQ4_NL), optionally --pure
    (IQ4_NL/IQ4_NL/pure), and optionally with an importance matrix (+imatrix: llama-imatrix on the calibration text,
    then llama-quantize --imatrix)."""
    body, plus, extra = entry.partition("+")
    parts = body.split("/")
    if (plus and extra != "imatrix") or len(parts) > 3 or (len(parts) == 3 and parts[2] != "pure") or not all(parts):
        fail(f"expected a ladder entry TYPE[/TABLE_TYPE[/pure]][+imatrix], found {entry}")
    return parts[0], (parts[1] if len(parts) > 1 else None), len(parts) == 3, bool(plus)


def run_tool(cmd, what):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        fail(f"{what} failed (exit {r.returncode}): {last}")


def calibration_tag(calib, chunks):
    """The name an importance matrix (and the files quantized with it) carries: its calibration text and length."""
    return hashlib.sha256(repr((os.path.basename(calib), os.path.getsize(calib), chunks)).encode()).hexdigest()[:8]


def importance_matrix(tools, f32, calib, chunks, threads, folder):
    """llama-imatrix's importance matrix of the teacher's F32 copy on `chunks` windows of 512 tokens of the calibration
    text, once per text (llama.cpp collects none for a tied head: the table is quantized without one)."""
    dest = os.path.join(folder, f"imatrix-{calibration_tag(calib, chunks)}.gguf")
    if not os.path.exists(dest):
        print(f"== llama-imatrix on {chunks} × 512 tokens of {calib}: {dest}", flush=True)
        part = dest[:-len(".gguf")] + ".part.gguf"
        run_tool([os.path.join(tools, "llama-imatrix"), "-m", f32, "-f", calib, "-o", part, "-c", "512",
                  "--chunks", str(chunks), "-t", str(threads)], "llama-imatrix")
        os.replace(part, dest)
    return dest


def ladder(teacher, types, folder, tools=None, calib=None, chunks=100, threads=2):
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(teacher))[0]
    f32 = os.path.join(folder, stem + ".F32.gguf")
    entries = [(t,) + ladder_entry(t) for t in types]  # every entry checked before anything is quantized
    if any(e[4] for e in entries):
        if not (tools and calib):
            fail(f"+imatrix ladder entries: expected --llamacpp-tools and --imatrix-text (Launch/frontier.sh sets both), "
                 f"found {'no tools' if not tools else 'no calibration text'}")
        if not os.path.isfile(calib):
            fail(f"--imatrix-text: expected a text file, found nothing at {calib}")
    out = []
    for t, preset, table, pure, imat in entries:
        name = t.replace("/", "-") + ("-" + calibration_tag(calib, chunks) if imat else "")
        dest = os.path.join(folder, f"{stem}.{name}.gguf")
        if not os.path.exists(dest):
            if not os.path.exists(f32):
                print(f"== the teacher's F32 copy (llama.cpp's quantizer, ALL_F32): {f32}", flush=True)
                quantize(teacher, f32, "LLAMA_FTYPE_ALL_F32")
            print(f"== llama.cpp quantizes the teacher to {t}: {dest}", flush=True)
            if imat:
                matrix = importance_matrix(tools, f32, calib, chunks, threads, folder)
                cmd = [os.path.join(tools, "llama-quantize"), "--allow-requantize", "--imatrix", matrix]
                if table:
                    cmd += ["--token-embedding-type", table.lower(), "--output-tensor-type", table.lower()]
                if pure:
                    cmd += ["--pure"]
                run_tool(cmd + [f32, dest + ".part", preset, str(threads)], f"llama-quantize to {t}")
                os.replace(dest + ".part", dest)
            else:
                quantize(f32, dest, "LLAMA_FTYPE_MOSTLY_" + preset, table, pure)
        out.append((f"llama.cpp {t}", dest, "ladder"))
    return out


def file_types(path):
    """(block type, table type): the type holding most of a file's bytes among its block matrices (what 'the student's
    type' means) and its embedding table's (with a tied head, the head's too), from one read of the file."""
    r = gguf.GGUFReader(path)
    by = {}
    table = None
    for t in r.tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            by[t.tensor_type.name] = by.get(t.tensor_type.name, 0) + int(t.n_bytes)
        elif t.name == "token_embd.weight":
            table = t.tensor_type.name
    return (max(by, key=by.get) if by else None), table


def windows_of(llm, path, context, count):
    text = open(path, encoding="utf-8", newline="").read()
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    lead = [llm.token_bos()] if add_bos else []
    body = context - len(lead)
    ws = [lead + ids[i:i + body] for i in range(0, len(ids), body)]
    ws = [w for w in ws if len(w) >= 2]
    return ws[:count] if count > 0 else ws


def log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def cache_key(*parts):
    """A file name for a result that depends on these files (by path, size and modification time) and settings."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr((p, os.path.getsize(p), os.path.getmtime(p)) if isinstance(p, str) and os.path.isfile(p) else p).encode())
    return h.hexdigest()[:24] + ".json"


def cached(folder, key, compute):
    """compute() once per key: results depend only on the files and settings in the key (speeds are never cached)."""
    path = os.path.join(folder, key)
    if os.path.exists(path):
        return json.load(open(path))
    value = compute()
    os.makedirs(folder, exist_ok=True)
    json.dump(value, open(path + ".part", "w"))
    os.replace(path + ".part", path)
    return value


def quality(models, texts, context, count, threads, folder):
    """Per model and text: llama.cpp NLL, KL(teacher || model), top-1 agreement (the teacher is models[0]); a model's
    figures on a text are kept in `folder` and not recomputed while the files are unchanged."""
    out = {}
    for tname, tpath in texts:
        keys = [cache_key("quality", models[0][1], p, tpath, context, count) for _, p, _ in models]
        todo = [i for i, k in enumerate(keys) if not os.path.exists(os.path.join(folder, k))]
        if todo:
            need = [0] + [i for i in todo if i != 0]
            llms = {i: Llama(model_path=models[i][1], n_ctx=context, n_batch=context, n_ubatch=context, logits_all=True, verbose=False,
                             n_threads=threads, n_threads_batch=threads) for i in need}
            ws = windows_of(llms[0], tpath, context, count)
            acc = {i: {"nll": 0.0, "kl": 0.0, "agree": 0, "n": 0} for i in need}
            for w in ws:
                n = len(w) - 1
                target = np.array(w[1:])
                teacher = None
                for i in need:
                    llm = llms[i]
                    llm.reset(); llm.eval(w)
                    lp = log_softmax(np.array(llm.scores[:len(w)], dtype=np.float64)[:n])
                    if i == 0:
                        teacher = lp
                    a = acc[i]
                    a["nll"] -= lp[np.arange(n), target].sum()
                    a["kl"] += (np.exp(teacher) * (teacher - lp)).sum()
                    a["agree"] += int((lp.argmax(-1) == teacher.argmax(-1)).sum())
                    a["n"] += n
            for i in todo:
                a = acc[i]
                cached(folder, keys[i], lambda: {"llamacpp_nll": a["nll"] / a["n"], "kl": a["kl"] / a["n"], "top1": a["agree"] / a["n"],
                                                 "tokens": a["n"], "windows": len(ws)})
            del llms
        for (name, _, _), k in zip(models, keys):
            out.setdefault(name, {})[tname] = dict(json.load(open(os.path.join(folder, k))))
        print(f"== {tname}: windows of {context} tokens scored by llama.cpp ({len(todo)} of {len(models)} models new)", flush=True)
    return out


def distill_nll(distill, model, text, context, count):
    r = subprocess.run([distill, "eval", "--model", model, "--text", text, "--context", str(context),
                        "--max-windows", str(count), "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        return None, last
    return json.loads(r.stdout)["mean_nll"], None


def speed(models, text, threads, prompt_tokens, generate, rounds):
    """llama.cpp prompt processing and greedy generation tokens/s, rounds interleaved over the models, medians."""
    runs = {name: ([], []) for name, _, _ in models}
    for _ in range(rounds):
        for name, path, _ in models:
            llm = Llama(model_path=path, n_ctx=prompt_tokens + generate + 8, n_batch=prompt_tokens, n_ubatch=prompt_tokens,
                        logits_all=False, verbose=False, n_threads=threads, n_threads_batch=threads)
            ids = llm.tokenize(open(text, encoding="utf-8", newline="").read().encode(), add_bos=False, special=False)
            prompt = ids[:prompt_tokens]
            llm.reset()
            t0 = time.perf_counter(); llm.eval(prompt); pp = len(prompt) / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            vocab = llm.n_vocab()
            for _ in range(generate):
                # the last position's logits, as llama.cpp keeps them when it computes only those
                tok = int(np.argmax(np.ctypeslib.as_array(lc.llama_get_logits(llm._ctx.ctx), shape=(vocab,))))
                llm.eval([tok])
            tg = generate / (time.perf_counter() - t0)
            runs[name][0].append(pp); runs[name][1].append(tg)
            del llm
    return {name: {"prompt_tps": statistics.median(p), "gen_tps": statistics.median(g)} for name, (p, g) in runs.items()}


def svg(rows, texts):
    """Two panels per text: file MiB vs NLL − teacher, and generation tokens/s vs NLL − teacher."""
    W, H, pad = 420, 300, 48
    panels = []
    for tname, _ in texts:
        panels.append((tname, "file size (MiB)", lambda r: r["mib"]))
        panels.append((tname, "llama.cpp generation (tokens/s, 2 threads)", lambda r: r["gen_tps"]))
    cols = 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * cols}" height="{H * ((len(panels) + 1) // cols)}" '
           'font-family="sans-serif" font-size="11">']
    colors = {"teacher": "#000", "ladder": "#1f77b4", "student": "#d62728"}
    for k, (tname, xlabel, xof) in enumerate(panels):
        ox, oy = (k % cols) * W, (k // cols) * H
        pts = [(xof(r), r["texts"][tname]["llamacpp_nll"] - r["teacher_nll"][tname], r) for r in rows if xof(r)]
        if not pts:
            continue
        xs = [p[0] for p in pts]; ys = [p[1] for p in pts]
        x0, x1 = min(xs) * 0.95, max(xs) * 1.05
        y0, y1 = min(0, min(ys)) - 0.02, max(ys) + 0.05
        def px(x): return ox + pad + (x - x0) / (x1 - x0) * (W - 2 * pad)
        def py(y): return oy + H - pad + (y - y0) / (y1 - y0) * -(H - 2 * pad)
        out.append(f'<rect x="{ox + pad}" y="{oy + pad}" width="{W - 2 * pad}" height="{H - 2 * pad}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{ox + W / 2}" y="{oy + 16}" text-anchor="middle" font-weight="bold">{html.escape(tname)}: '
                   f'NLL − teacher vs {html.escape(xlabel.split(" (")[0])}</text>')
        out.append(f'<text x="{ox + W / 2}" y="{oy + H - 10}" text-anchor="middle">{html.escape(xlabel)}</text>')
        out.append(f'<text x="{ox + 12}" y="{oy + H / 2}" transform="rotate(-90 {ox + 12} {oy + H / 2})" text-anchor="middle">NLL − teacher (nats)</text>')
        for v in (x0, (x0 + x1) / 2, x1):
            out.append(f'<text x="{px(v):.1f}" y="{oy + H - pad + 14}" text-anchor="middle">{v:.0f}</text>')
        for v in (y0, 0.0, y1):
            out.append(f'<text x="{ox + pad - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:+.2f}</text>')
        out.append(f'<line x1="{ox + pad}" x2="{ox + W - pad}" y1="{py(0):.1f}" y2="{py(0):.1f}" stroke="#ccc" stroke-dasharray="3,3"/>')
        for x, y, r in pts:
            c = colors[r["kind"]]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{c}"/>')
            label = r["name"].replace("llama.cpp ", "")
            out.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 4:.1f}" fill="{c}" font-size="9">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", action="append", default=[], help="NAME=FILE.gguf")
    ap.add_argument("--text", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ladder", default="Q8_0 Q4_K_M Q5_0 Q3_K_M IQ4_NL Q4_0 Q2_K Q4_K_M/IQ4_NL Q3_K_M/IQ4_NL IQ4_NL/IQ4_NL Q2_K/IQ4_NL")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="speed rounds; 0 = no speed measurement")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--generate", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llamacpp-tools", help="folder with llama-quantize and llama-imatrix (for +imatrix entries)")
    ap.add_argument("--imatrix-text", help="calibration text for +imatrix entries")
    ap.add_argument("--imatrix-chunks", type=int, default=100, help="512-token windows of it llama-imatrix reads")
    ap.add_argument("--distill", default=os.environ.get("DISTILL_BIN", ".build/release/distill"))
    a = ap.parse_args()

    def pair(s, flag):
        if "=" not in s:
            fail(f"{flag}: expected NAME=PATH, found '{s}'")
        n, p = s.split("=", 1)
        if not os.path.isfile(p):
            fail(f"{flag} {n}: expected a file, found nothing at {p}")
        return n, p
    if not os.path.isfile(a.teacher):
        fail(f"--teacher: expected a GGUF file, found nothing at {a.teacher}")
    texts = [pair(t, "--text") for t in a.text]
    students = [pair(s, "--student") + ("student",) for s in a.student]
    models = [("teacher", a.teacher, "teacher")] + ladder(a.teacher, a.ladder.split(), os.path.join(a.out, "ladder"),
                                                         a.llamacpp_tools, a.imatrix_text, a.imatrix_chunks, a.threads) + students

    results = os.path.join(a.out, "cache")
    q = quality(models, texts, a.context, a.windows, a.threads, results)
    print(f"== llama.cpp speed: {a.prompt}-token prompt, {a.generate} generated tokens, {a.threads} threads, "
          f"{a.rounds} rounds interleaved", flush=True)
    # --rounds 0: no speed (e.g. while something else runs on the cores); the quality figures are kept for the next run
    s = speed(models, texts[0][1], a.threads, a.prompt, a.generate, a.rounds) if a.rounds > 0 else \
        {name: {"prompt_tps": None, "gen_tps": None} for name, _, _ in models}
    rows = []
    for name, path, kind in models:
        r = {"name": name, "path": path, "kind": kind, "bytes": os.path.getsize(path), "mib": os.path.getsize(path) / 2**20,
             "texts": q[name], **s[name]}
        r["type"], r["table"] = file_types(path)
        for tname, tpath in texts:
            nll, why = cached(results, cache_key("distill", path, tpath, a.context, a.windows, a.distill),
                              lambda: distill_nll(a.distill, path, tpath, a.context, a.windows))
            r["texts"][tname]["distill_nll"] = nll
            if why:
                r["texts"][tname]["distill_note"] = why
        rows.append(r)
    teacher = rows[0]
    # "the teacher quantized by llama.cpp to the student's type": the ladder entry whose blocks and table are the
    # student's types (IQ4_NL/IQ4_NL for a student all in IQ4_NL), else the preset of the student's block type (Q4_0 for
    # a student whose blocks are Q4_0), not whichever preset happens to fall back to it
    ladder_rows = [r for r in rows if r["kind"] == "ladder"]
    by_type = {r["name"].split()[-1]: r for r in ladder_rows}
    for r in rows:
        r["teacher_nll"] = {t: teacher["texts"][t]["llamacpp_nll"] for t, _ in texts}
        same = None
        if r["kind"] == "student":
            same = next((x for x in ladder_rows if x["type"] == r["type"] and x["table"] == r["table"]
                         and "/" in x["name"]), None) or by_type.get(r["type"])
        r["gen_vs_teacher_same_type"] = r["gen_tps"] / same["gen_tps"] if same and r["gen_tps"] else None
        r["same_type_ladder"] = same["name"] if same else None

    os.makedirs(a.out, exist_ok=True)
    meta = {"teacher": a.teacher, "context": a.context, "windows": a.windows, "threads": a.threads, "rounds": a.rounds,
            "prompt": a.prompt, "generate": a.generate, "llama_cpp_python": llama_cpp.__version__,
            "texts": dict(texts), "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")}
    json.dump({"meta": meta, "rows": rows}, open(os.path.join(a.out, "frontier.json"), "w"), indent=1)
    head = "| model | MiB | block type | table | " + " | ".join(
        f"{t}: NLL (llama.cpp) | − teacher | distill eval | KL | top-1" for t, _ in texts) + " | prompt tok/s | gen tok/s | gen ÷ teacher at its type |"
    lines = [f"Teacher {os.path.basename(a.teacher)}; windows of {a.context} tokens (up to {a.windows} per text); "
             f"speed: llama.cpp {llama_cpp.__version__}, {a.threads} threads, {a.prompt}-token prompt then {a.generate} greedy tokens, "
             f"medians of {a.rounds}; CPU {meta['cpu']}.", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: (r["kind"] != "teacher", -r["bytes"])):
        cells = [r["name"] if r["kind"] != "student" else f"**{r['name']}**", f"{r['mib']:.1f}", r["type"] or "?", r["table"] or "?"]
        for t, _ in texts:
            x = r["texts"][t]
            d = x["distill_nll"]
            cells += [f"{x['llamacpp_nll']:.4f}", f"{x['llamacpp_nll'] - r['teacher_nll'][t]:+.3f}",
                      f"{d:.4f}" if d is not None else "n/a", f"{x['kl']:.4f}", f"{100 * x['top1']:.1f}%"]
        g = r["gen_vs_teacher_same_type"]
        cells += [f"{r['prompt_tps']:.0f}" if r["prompt_tps"] else "–", f"{r['gen_tps']:.0f}" if r["gen_tps"] else "–",
                  f"{g:.2f}× ({r['same_type_ladder']})" if g else ""]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    open(os.path.join(a.out, "frontier.md"), "w").write(table)
    picture = svg(rows, texts)
    open(os.path.join(a.out, "frontier.svg"), "w").write(picture)
    body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", table)
    html_rows = []
    for line in body.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            tag = "th" if line.startswith("| model") else "td"
            html_rows.append("<tr>" + "".join(f"<{tag}>{c.strip()}</{tag}>" for c in line.strip("|").split("|")) + "</tr>")
    page = ("<!doctype html><meta charset='utf-8'><title>distill frontier</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style>"
            f"<h1>Students against llama.cpp's quantization of the teacher</h1><p>{html.escape(lines[0])}</p>"
            f"<p>Black: the teacher; blue: llama.cpp's quantizer applied to it; red: students.</p>{picture}"
            f"<table>{''.join(html_rows)}</table>")
    open(os.path.join(a.out, "frontier.html"), "w").write(page)
    print(table)
    print(f"== written: {a.out}/frontier.json, frontier.md, frontier.svg, frontier.html")


if __name__ == "__main__":
    main()
