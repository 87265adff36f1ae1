# Sourced by the comparison scripts that train variants of one student and score them on held-out text
# (compare_cross_tokenizer.sh, compare_precision.sh, lr_sweep.sh): the binary, the teacher and data they use, and the two steps
# every variant goes through. Run from the repository root.
d=${DISTILL_BIN:-.build/release/distill}
smollm=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
data=Checkpoints/data/fortunes-smollm
book=Checkpoints/data/botchan.txt

# compare_require FILE...: each must exist, else one line naming the scripts that make them, and exit.
compare_require() {
    local f
    for f in "$d" "$@"; do
        [ -e "$f" ] || { echo "$(basename "$0"): $f is missing (swift build -c release, Launch/quickstart.sh, Launch/fetch_teacher.sh, Launch/fetch_heldout.sh)" >&2; exit 1; }
    done
}

# compare_train NAME CFG DIR [TRAIN ARGS...]: trains CFG on 2 ranks into DIR unless its last checkpoint verifies
# (a finished run is reused, an interrupted one resumed); the log goes to DIR.log, the wall seconds to DIR.seconds.
# Prints the last checkpoint's folder.
compare_train() {
    local name=$1 cfg=$2 dir=$3
    shift 3
    local steps final start
    steps=$($d train --config "$cfg" --dry-run "$@" | awk '/^train:/{t=1} t&&/^  steps:/{print $2; exit}')
    final=$(printf "%s/step_%08d" "$dir" "$steps")
    if [ ! -f "$final/checksums.json" ]; then
        echo "== $name: training ($cfg $*)" >&2
        mkdir -p "$(dirname "$dir")"
        start=$(date +%s)
        DISTILL_BIN=$d bash Launch/distill_mpi.sh 2 train --config "$cfg" --checkpoint-dir "$dir" --resume auto --sample-tokens 0 "$@" \
            > "$dir.log" 2>&1 || true
        [ -f "$final/checksums.json" ] || { echo "$(basename "$0"): $name did not finish (see $dir.log)" >&2; exit 1; }
        echo "$(( $(date +%s) - start ))" > "$dir.seconds"
    fi
    echo "$final"
}

# compare_score CHECKPOINT: its NLL beside SmolLM2's on 32 × 128 tokens of the fortunes validation split
# (CHECKPOINT/val.json) and of the held-out book (CHECKPOINT/book.json), each computed once.
compare_score() {
    [ -f "$1/val.json" ] || $d eval --model "$1" --teacher "$smollm" --data "$data" --context 128 --max-windows 32 --json > "$1/val.json"
    [ -f "$1/book.json" ] || $d eval --model "$1" --teacher "$smollm" --text "$book" --context 128 --max-windows 32 --json > "$1/book.json"
}
