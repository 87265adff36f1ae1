#!/usr/bin/env bash
# The size–quality–speed frontier in one command: the teacher requantized by llama.cpp's own quantizer (its ladder of
# types, the free alternative to a student) beside the students given, each with file size, held-out NLL beside the
# teacher (llama.cpp and distill eval) on two texts none of them trained on (Botchan and the Lee news corpus,
# Launch/fetch_heldout.sh), KL to the teacher, top-1 agreement, and llama.cpp's prompt and generation speed on 2 threads.
# Writes Checkpoints/frontier/ (or OUT): frontier.md (the table), frontier.svg (bytes vs NLL, speed vs NLL),
# frontier.html (both) and frontier.json. Run it with nothing else on the cores: the speeds are measured.
# usage: Launch/frontier.sh [TEACHER.gguf] [STUDENT.gguf | NAME=STUDENT.gguf ...]
#   (TEACHER default: SmolLM2-135M-Instruct, Launch/fetch_teacher.sh; a student's name defaults to its folder/file name)
# env: OUT (Checkpoints/frontier), LADDER ("Q8_0 Q4_K_M Q5_0 Q3_K_M IQ4_NL Q4_0 Q2_K Q4_K_M/IQ4_NL Q3_K_M/IQ4_NL
#   IQ4_NL/IQ4_NL Q2_K/IQ4_NL Q3_K_M+imatrix IQ4_NL+imatrix Q3_K_M/IQ4_NL+imatrix IQ4_NL/IQ4_NL+imatrix": llama.cpp's presets, and with /TABLE the embedding table and head forced to that type as
#   llama-quantize --token-embedding-type/--output-tensor-type do — its presets keep them in Q8_0 here; /TABLE/pure
#   adds --pure; +imatrix after an entry quantizes with an importance matrix, as llama.cpp's users do for low-bit types:
#   llama-imatrix reads IMATRIX_CHUNKS (100) windows of 512 tokens of IMATRIX_TEXT — default Debian's fortunes, the text
#   the recipes' students train on — and llama-quantize --imatrix writes the file; both programs are built once by
#   Launch/llamacpp_tools.sh, about 8 minutes), WINDOWS (32 windows of
#   CONTEXT=256 tokens per text), ROUNDS (3). llama-cpp-python==0.3.36 is built from source once (about 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Launch/setup.sh > /dev/null
python3 -c "import llama_cpp" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore "llama-cpp-python==0.3.36"
swift build -c release > /dev/null
teacher=${1:-$(bash Launch/fetch_teacher.sh)}
[ $# -gt 0 ] && shift
students=()
for s in "$@"; do
    case "$s" in
        *=*) students+=(--student "$s") ;;
        *) students+=(--student "$(basename "$(dirname "$s")")/$(basename "$s" .gguf)=$s") ;;
    esac
done
book=$(bash Launch/fetch_heldout.sh botchan)
news=$(bash Launch/fetch_heldout.sh news)
out=${OUT:-Checkpoints/frontier}
ladder=${LADDER:-Q8_0 Q4_K_M Q5_0 Q3_K_M IQ4_NL Q4_0 Q2_K Q4_K_M/IQ4_NL Q3_K_M/IQ4_NL IQ4_NL/IQ4_NL Q2_K/IQ4_NL Q3_K_M+imatrix IQ4_NL+imatrix Q3_K_M/IQ4_NL+imatrix IQ4_NL/IQ4_NL+imatrix}
imatrix=()
if [[ " $ladder" == *+imatrix* ]]; then
    tools=$(bash Launch/llamacpp_tools.sh)
    calib=${IMATRIX_TEXT:-}
    if [ -z "$calib" ]; then
        # the fortunes as distill prepare reads them (Launch/fetch_corpus.sh fortunes), one per paragraph
        calib=$out/ladder/fortunes.txt
        mkdir -p "$out/ladder"
        if [ ! -s "$calib" ]; then
            for f in /usr/share/games/fortunes/*; do
                case "$f" in *.dat|*.u8) ;; *) if [ -f "$f" ]; then sed 's/^%$//' "$f"; fi ;; esac
            done > "$calib.part"
            mv "$calib.part" "$calib"
        fi
    fi
    imatrix=(--llamacpp-tools "$tools" --imatrix-text "$calib" --imatrix-chunks "${IMATRIX_CHUNKS:-100}")
fi
# the speeds are llama.cpp's; OpenBLAS's forced core (set on some machines) does not touch it, but distill eval is timed nowhere here
exec python3 Launch/frontier.py --teacher "$teacher" "${students[@]}" --text "Botchan=$book" --text "news=$news" \
    --out "$out" --ladder "$ladder" "${imatrix[@]}" \
    --context "${CONTEXT:-256}" --windows "${WINDOWS:-32}" --rounds "${ROUNDS:-3}" --distill .build/release/distill
