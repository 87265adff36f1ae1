#!/usr/bin/env bash
# Prepares a training corpus with a teacher's tokenizer and prints the prepared folder.
#   fortunes: Debian's fortunes (fortunes, fortunes-min), one document per fortune.
#   mix: more varied English than the fortunes alone, all from Debian packages: the fortunes; the King James Bible
#     (bible-kjv, public domain, one document per chapter, verse numbers dropped); Ambrose Bierce's "The Devil's
#     Dictionary" (dict-devil, public domain); the Debian Reference (debian-reference-en); and the prose parts of
#     Python 3.11's documentation sources (python3.11-doc: tutorial, howto, faq, reference, what's new, glossary).
#     Long texts are cut into documents of about 4 KB at paragraph ends, so the validation split takes some of each.
#     Never the evaluation texts (Launch/fetch_heldout.sh: Botchan, the Lee news corpus) and no Shakespeare.
# usage: Launch/fetch_corpus.sh fortunes|mix TOKENIZER OUT   (TOKENIZER: a GGUF file or Hugging Face folder)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: Launch/fetch_corpus.sh fortunes|mix TOKENIZER OUT}
tokenizer=${2:?usage: Launch/fetch_corpus.sh fortunes|mix TOKENIZER OUT}
out=${3:?usage: Launch/fetch_corpus.sh fortunes|mix TOKENIZER OUT}
d=.build/release/distill
[ -x "$d" ] || { echo "fetch_corpus.sh: expected a release build at $d (swift build -c release), found none" >&2; exit 1; }
if [ -s "$out/train.bin" ]; then echo "$out"; exit 0; fi
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
def chunks(text, size=4096):
    """Paragraph-aligned documents of about `size` bytes; a line equal to % would end a document, so none is kept."""
    doc = []
    n = 0
    for para in re.split(r"\n\s*\n", text):
        para = "\n".join(l for l in para.split("\n") if l.strip() != "%").strip("\n")
        if not para.strip():
            continue
        doc.append(para)
        n += len(para)
        if n >= size:
            yield "\n\n".join(doc)
            doc, n = [], 0
    if doc:
        yield "\n\n".join(doc)
def write(name, docs):
    with open(os.path.join(staging, name + ".txt"), "w") as f:
        for d in docs:
            f.write(d + "\n%\n")
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
write("kjv", chapters)
for name in ("devil", "debian-reference", "python-docs"):
    write(name, chunks(open(os.path.join(staging, name + ".raw"), encoding="utf-8", errors="replace").read()))
for name in ("kjv", "devil", "debian-reference", "python-docs"):
    os.remove(os.path.join(staging, name + ".raw"))
PY
    $d prepare /usr/share/games/fortunes "$staging" --exclude-suffix .dat --exclude-suffix .u8 --separator % \
        --tokenizer "$tokenizer" --output "$out" >&2 ;;
*) echo "fetch_corpus.sh: expected fortunes or mix, found '$which'" >&2; exit 1 ;;
esac
echo "$out"
