#!/usr/bin/env bash
# The objective comparison of docs/results.md: the same student, data, teacher and step budget (Configs/objectives/base.yaml)
# trained with each objective and on-policy mode on 2 ranks, every checkpoint evaluated against the teacher on the
# held-out fortunes (validation NLL, KL(teacher‖student), top-1 agreement). Runs that already finished are reused.
# Usage: Launch/lab/compare_objectives.sh [OBJECTIVE...]   (default: all; results in Checkpoints/objectives/)
# Needs the release build, the teacher and the prepared corpus (Launch/quickstart.sh makes all three).
set -euo pipefail
cd "$(dirname "$0")/../.."
d=.build/release/distill
teacher=Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf
data=Checkpoints/data/fortunes-smollm
out=Checkpoints/objectives
objectives=("$@")
[ ${#objectives[@]} -eq 0 ] && objectives=(fkl rkl skew_fkl skew_rkl jsd tvd fkl_rkl gkd distillm minillm)
for f in "$d" "$teacher" "$data/train.bin"; do
    [ -e "$f" ] || { echo "compare_objectives: $f is missing; run Launch/quickstart.sh first" >&2; exit 1; }
done
mkdir -p "$out"
for o in "${objectives[@]}"; do
    cfg=Configs/objectives/$o.yaml
    [ -f "$cfg" ] || { echo "compare_objectives: no $cfg (expected one of: $(ls Configs/objectives | grep -v base | sed 's/.yaml//' | tr '\n' ' '))" >&2; exit 1; }
    steps=$($d train --config "$cfg" --dry-run | awk '/^train:/{t=1} t&&/^  steps:/{print $2; exit}')
    final=$(printf "%s/%s/step_%08d" "$out" "$o" "$steps")
    if [ ! -f "$final/checksums.json" ]; then
        echo "== $o: training ($cfg)"
        start=$(date +%s)
        bash Launch/distill_mpi.sh 2 train --config "$cfg" --resume auto --sample-tokens 0 2>&1 | tee "$out/$o.log" | grep -E "^step|eval|error" || true
        [ -f "$final/checksums.json" ] || { echo "compare_objectives: $o did not finish (see $out/$o.log)" >&2; exit 1; }
        echo "$(( $(date +%s) - start ))" > "$out/$o.seconds"
    fi
    for ck in "$out/$o"/step_*; do
        [ -f "$ck/checksums.json" ] || continue
        [ -f "$ck/eval.json" ] || $d eval --model "$ck" --teacher "$teacher" --data "$data" --context 128 --max-windows 16 --json > "$ck/eval.json"
    done
done
python3 - "$out" "${objectives[@]}" <<'PY'
import json, os, sys
out, objectives = sys.argv[1], sys.argv[2:]
rows = []
for o in objectives:
    d = os.path.join(out, o)
    cks = sorted(c for c in os.listdir(d) if c.startswith("step_") and os.path.exists(os.path.join(d, c, "eval.json")))
    evals = [(int(c[5:]), json.load(open(os.path.join(d, c, "eval.json")))) for c in cks]
    secs = open(os.path.join(out, o + ".seconds")).read().strip() if os.path.exists(os.path.join(out, o + ".seconds")) else "?"
    rows.append((o, evals, secs))
steps = sorted({s for _, e, _ in rows for s, _ in e})
teacher = rows[0][1][-1][1]["teacher_mean_nll"] if rows and rows[0][1] else float("nan")
lines = ["| objective | " + " | ".join(f"step {s}: NLL / KL / top-1" for s in steps) + " | train time |",
         "|---|" + "---|" * len(steps) + "---|"]
for o, evals, secs in rows:
    by = dict(evals)
    cells = [f"{by[s]['mean_nll']:.3f} / {by[s]['kl_teacher_model']:.3f} / {100 * by[s]['top1_agreement']:.1f}%" if s in by else "" for s in steps]
    lines.append(f"| {o} | " + " | ".join(cells) + f" | {secs} s |")
lines.append(f"\nTeacher NLL on the same windows: {teacher:.3f}.")
text = "\n".join(lines)
open(os.path.join(out, "results.md"), "w").write(text + "\n")
print(text)
PY
