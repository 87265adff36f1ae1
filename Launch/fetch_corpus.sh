#!/usr/bin/env bash
# Prepares a training corpus with a teacher's tokenizer and prints the prepared folder.
#   fortunes: Debian's fortunes (fortunes, fortunes-min), one document per fortune.
#   mix: more varied English than the fortunes alone, all from Debian packages: the fortunes; the King James Bible
#     (bible-kjv, public domain, one document per chapter, verse numbers dropped); Ambrose Bierce's "The Devil's
#     Dictionary" (dict-devil, public domain); the Debian Reference (debian-reference-en); and the prose parts of
#     Python 3.11's documentation sources (python3.11-doc: tutorial, howto, faq, reference, what's new, glossary).
#     Long texts are cut into documents of about 4 KB at paragraph ends, so the validation split takes some of each.
#     Never the evaluation texts (Launch/fetch_heldout.sh: Botchan, the Lee news corpus) and no Shakespeare.
#   books: the fortunes with Jane Austen's six novels (Debian's r-cran-janeaustenr, public domain: Emma, Mansfield
#     Park, Northanger Abbey, Persuasion, Pride and Prejudice, Sense and Sensibility), read from the package's R data
#     file without installing R (apt-get download, then its serialized character vectors), cut into documents of about
#     4 KB at paragraph ends. Novels, none of them an evaluation text.
#   books+teacher: the books corpus with text sampled from the TOKENIZER model itself (`distill synthesize`:
#     SAMPLE_TOKENS tokens, default 800,000, in SAMPLE_BATCH (64) sequences at a time of SAMPLE_LENGTH (512) started
#     from its <|endoftext|> token where it has one, else its BOS; temperature 1, seed 1; on 2 ranks; bf16 matmuls
#     where the CPU has them; the teacher's products on bf16 panels, DISTILL_TEACHER_INT8=0, as the recipes' samples were
#     drawn before the 8-bit products existed: the same arguments give the same text), kept beside OUT as
#     OUT.sample.jsonl and reused. Text in the teacher's own distribution, not text we picked.
#   teacher: that sampled text alone (no fortunes, no novels).
# usage: Launch/fetch_corpus.sh fortunes|mix|books|books+teacher|teacher TOKENIZER OUT   (TOKENIZER: a GGUF file, a Hugging Face folder or
#   `bytes`; DISTILL_BIN: the distill binary, default the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: Launch/fetch_corpus.sh fortunes|mix|books|books+teacher|teacher TOKENIZER OUT"
which=${1:?$usage}
tokenizer=${2:?$usage}
out=${3:?$usage}
d=${DISTILL_BIN:-.build/release/distill}
[ -x "$d" ] || { echo "fetch_corpus.sh: expected the distill binary at $d (swift build -c release), found none" >&2; exit 1; }
if [ -s "$out/train.bin" ]; then echo "$out"; exit 0; fi
# chunk_raw STAGING NAME…: each STAGING/NAME.raw cut into paragraph-aligned documents of about 4 KB in STAGING/NAME.txt
# (one per `%` line, as the fortunes are; a line that is `%` itself would end a document, so none is kept), the .raw removed
chunk_raw() {
    python3 - "$@" <<'PY'
import os, re, sys
staging, names = sys.argv[1], sys.argv[2:]
for name in names:
    raw = os.path.join(staging, name + ".raw")
    text = open(raw, encoding="utf-8", errors="replace").read()
    with open(os.path.join(staging, name + ".txt"), "w") as f:
        doc, n = [], 0
        for para in re.split(r"\n\s*\n", text):
            para = "\n".join(l for l in para.split("\n") if l.strip() != "%").strip("\n")
            if not para.strip():
                continue
            doc.append(para)
            n += len(para)
            if n >= 4096:
                f.write("\n\n".join(doc) + "\n%\n")
                doc, n = [], 0
        if doc:
            f.write("\n\n".join(doc) + "\n%\n")
    os.remove(raw)
PY
}
# stage_books STAGING: Jane Austen's six novels as documents of about 4 KB in STAGING/austen-*.txt
stage_books() {
    local staging=$1
    # the package alone (it depends on R, which reading its data does not need); apt checks it against the signed index
    # (into a folder apt's unprivileged download user may write to)
    chmod 711 "$staging" && mkdir -m 777 "$staging/deb"
    # (a machine whose package lists were never fetched, as a fresh container's, updates them once)
    if ! (cd "$staging/deb" && apt-get download -qq r-cran-janeaustenr > /dev/null 2>&1); then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq >&2
        (cd "$staging/deb" && apt-get download -qq r-cran-janeaustenr >&2)
    fi
    dpkg-deb -x "$staging"/deb/r-cran-janeaustenr_*.deb "$staging/pkg"
    python3 - "$staging/pkg/usr/lib/R/site-library/janeaustenr/data/Rdata" "$staging" <<'PY'
import gzip, re, struct, sys, zlib
base, staging = sys.argv[1:]
def unserialize_strings(raw):
    """One R character vector from R's binary serialization (format 'X', versions 2 and 3): its strings."""
    if raw[:2] != b"X\n":
        sys.exit(f"fetch_corpus.sh: expected R's binary serialization ('X'), found {raw[:2]!r}")
    version, = struct.unpack(">i", raw[2:6])
    p = 14
    if version == 3:
        (n,) = struct.unpack(">i", raw[p:p + 4]); p += 4 + n
    flags, n = struct.unpack(">ii", raw[p:p + 8]); p += 8
    if flags & 0xFF != 16:
        sys.exit(f"fetch_corpus.sh: expected a character vector (R type 16), found type {flags & 0xFF}")
    strings = []
    for _ in range(n):
        flags, length = struct.unpack(">ii", raw[p:p + 8]); p += 8
        if length < 0:
            strings.append("")
            continue
        strings.append(raw[p:p + length].decode("utf-8")); p += length
    return strings
# the lazy-load index: a list whose entries are (offset, length) pairs into Rdata.rdb; each entry there is a 4-byte
# length, then the zlib-compressed serialization of one object
index = gzip.decompress(open(base + ".rdx", "rb").read())
pairs = [struct.unpack(">ii", m.group(1)) for m in re.finditer(rb"\x00\x00\x00\r\x00\x00\x00\x02(.{8})", index, re.S)]
rdb = open(base + ".rdb", "rb").read()
novels = []
for offset, length in pairs:
    (size,) = struct.unpack(">i", rdb[offset:offset + 4])
    raw = zlib.decompress(rdb[offset + 4:offset + length])
    if len(raw) != size:
        sys.exit(f"fetch_corpus.sh: expected {size} bytes in an R object, found {len(raw)}")
    novels.append("\n".join(unserialize_strings(raw)))
if len(novels) != 6 or sum(map(len, novels)) < 3_500_000:
    sys.exit(f"fetch_corpus.sh: expected Jane Austen's six novels (about 4 MB), found {len(novels)} texts of {sum(map(len, novels))} characters")
for i, novel in enumerate(novels):
    open(f"{staging}/austen-{i}.raw", "w").write(novel)
PY
    rm -rf "$staging/pkg" "$staging/deb"
    chunk_raw "$staging" austen-0 austen-1 austen-2 austen-3 austen-4 austen-5
}
case "$which" in
fortunes)
    bash Launch/setup.sh >&2
    $d prepare /usr/share/games/fortunes --exclude-suffix .dat --exclude-suffix .u8 --separator % \
        --tokenizer "$tokenizer" --output "$out" >&2 ;;
mix)
    bash Launch/setup.sh bible-kjv dict-devil debian-reference-en python3.11-doc >&2
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    bible -f "Gen1:1-Rev22:21" > "$staging/kjv.raw"
    [ "$(wc -c < "$staging/kjv.raw")" -gt 4000000 ] || { echo "fetch_corpus.sh: expected the whole King James Bible from bible -f, found $(wc -c < "$staging/kjv.raw") bytes" >&2; exit 1; }
    zcat /usr/share/dictd/devil.dict.dz > "$staging/devil.raw"
    zcat /usr/share/debian-reference/debian-reference.en.txt.gz > "$staging/debian-reference.raw"
    py=/usr/share/doc/python3.11/html/_sources
    find "$py/tutorial" "$py/howto" "$py/faq" "$py/reference" "$py/whatsnew" "$py/glossary.rst.txt" -name '*.txt' | sort \
        | xargs cat > "$staging/python-docs.raw"
    python3 - "$staging" <<'PY'
import os, re, sys
staging = sys.argv[1]
# the Bible: "Ge1:1 In the beginning …" lines, one document per chapter, verse references dropped
chapters, current, key = [], [], None
for line in open(os.path.join(staging, "kjv.raw"), encoding="utf-8"):
    m = re.match(r"^(\w+?\d+):\d+ (.*)$", line.rstrip("\n"))
    if not m:
        continue
    if m.group(1) != key and current:
        chapters.append("\n".join(current))
        current = []
    key = m.group(1)
    current.append(m.group(2))
chapters.append("\n".join(current))
with open(os.path.join(staging, "kjv.txt"), "w") as f:
    for c in chapters:
        f.write(c + "\n%\n")
os.remove(os.path.join(staging, "kjv.raw"))
PY
    chunk_raw "$staging" devil debian-reference python-docs
    $d prepare /usr/share/games/fortunes "$staging" --exclude-suffix .dat --exclude-suffix .u8 --separator % \
        --tokenizer "$tokenizer" --output "$out" >&2 ;;
books)
    bash Launch/setup.sh >&2
    staging=$(mktemp -d)
    trap 'rm -rf "$staging"' EXIT
    stage_books "$staging"
    $d prepare /usr/share/games/fortunes "$staging" --exclude-suffix .dat --exclude-suffix .u8 --separator % \
        --tokenizer "$tokenizer" --output "$out" >&2 ;;
books+teacher|teacher)
    [ "$tokenizer" != bytes ] || { echo "fetch_corpus.sh: $which samples a model: expected a GGUF file or Hugging Face folder as TOKENIZER, found bytes" >&2; exit 1; }
    bash Launch/setup.sh >&2
    sample="${out%/}.sample.jsonl"
    if [ ! -s "$sample" ]; then
        # the model's own end-of-text token starts every sequence where it has one (pretraining-like text, not a chat)
        prompt=""
        [ "$(echo '"<|endoftext|>"' | $d tokenize --model "$tokenizer" --special 2>/dev/null | tr -d '[:space:]')" = "[0]" ] && prompt="<|endoftext|>"
        echo "== sampling ${SAMPLE_TOKENS:-800000} tokens from $tokenizer (distill synthesize, prompt '${prompt:-its BOS}'; about 30 min on 2 cores in bf16)" >&2
        # two ranks (each its share of the batches) draw 1.2× what one process on both cores does
        DISTILL_TEACHER_INT8=0 DISTILL_BIN="$d" bash Launch/distill_mpi.sh 2 synthesize --model "$tokenizer" --output "$sample" --tokens "${SAMPLE_TOKENS:-800000}" --length "${SAMPLE_LENGTH:-512}" --batch "${SAMPLE_BATCH:-64}" \
            --prompt "$prompt" --precision bf16 --seed 1 >&2
    fi
    if [ "$which" = teacher ]; then
        $d prepare "$sample" --tokenizer "$tokenizer" --output "$out" >&2
    else
        staging=$(mktemp -d)
        trap 'rm -rf "$staging"' EXIT
        stage_books "$staging"
        $d prepare /usr/share/games/fortunes "$staging" "$sample" --exclude-suffix .dat --exclude-suffix .u8 --separator % \
            --tokenizer "$tokenizer" --output "$out" >&2
    fi ;;
*) echo "fetch_corpus.sh: expected fortunes, mix, books, books+teacher or teacher, found '$which'" >&2; exit 1 ;;
esac
echo "$out"
