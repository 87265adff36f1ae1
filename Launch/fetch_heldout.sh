#!/usr/bin/env bash
# Fetches the held-out English text the students are judged on and never trained on: "Botchan (Master Darling)" by
# Natsume Sōseki, Yasotaro Morri's English translation (Project Gutenberg eBook #8868, public domain), which the PyPI
# source package sentencepiece==0.2.3 ships as test/botchan.txt. Downloads the sdist once (checked by SHA-256), keeps
# the book's body (between the Gutenberg START and END lines, license text dropped) in Checkpoints/data/botchan.txt
# and prints that path.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=Checkpoints/data/botchan.txt
if [ ! -s "$dest" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # pip would build the sdist to read its metadata; the file is all we need, so ask the index for it directly
    python3 - "$tmp" <<'PY'
import hashlib, json, sys, urllib.parse, urllib.request
index = "https://pypi.org/pypi/sentencepiece/json"
meta = json.load(urllib.request.urlopen(index, timeout=120))
sdist = next(u for u in meta["releases"]["0.2.3"] if u["filename"] == "sentencepiece-0.2.3.tar.gz")
data = urllib.request.urlopen(urllib.parse.urljoin(index, sdist["url"]), timeout=300).read()
want = "21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd"
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"sentencepiece-0.2.3.tar.gz: expected SHA-256 {want}, found {got}")
open(sys.argv[1] + "/sp.tar.gz", "wb").write(data)
PY
    tar -xzf "$tmp/sp.tar.gz" -C "$tmp" sentencepiece-0.2.3/test/botchan.txt
    mkdir -p Checkpoints/data
    sed -n '/^\*\*\* START OF THIS PROJECT GUTENBERG/,/^End of Project Gutenberg/p' "$tmp/sentencepiece-0.2.3/test/botchan.txt" \
        | sed '1d;$d' > "$dest.partial"
    mv "$dest.partial" "$dest"
fi
echo "$dest"
