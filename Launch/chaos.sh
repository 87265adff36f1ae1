#!/usr/bin/env bash
# The chaos run: a 2-rank distillation (a trained teacher present, QAT Q8_0 on, checkpoints every 4 steps and every
# 3 seconds, keep 3) inside Launch/restart.sh, killed N times with kill -9 at random moments: a random rank, mpirun
# itself, rank 0 in the middle of a checkpoint write (DISTILL_CHECKPOINT_WRITE_DELAY makes every write pause halfway),
# or a rank while the restarted job is starting and resuming. After the last kill the run must finish; every
# checkpoint that ever verified must still verify or have been retired by `keep`; the final weights and optimizer
# state must equal an uninterrupted run's bit for bit (same world size).
#   usage: Launch/chaos.sh N          (CHAOS_SEED picks the moments, CHAOS_STEPS the run's length: default 30·N + 100;
#                                      CHAOS_MICRO_BATCH=M trains on M windows per rank and step instead of 4 × 2)
# Results: Checkpoints/chaos/chaos.md (CHAOS_DIR overrides the folder); exit 0 only when every check passes.
# N = 50 takes about 10 minutes with the release build on 2 cores (the test suite runs N = 5 with the debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: Launch/chaos.sh N}
d=${DISTILL_BIN:-$PWD/.build/release/distill}
[ -x "$d" ] || { echo "chaos: expected the distill binary at $d (swift build -c release), found none" >&2; exit 2; }
work=$(mkdir -p "${CHAOS_DIR:-Checkpoints/chaos}" && cd "${CHAOS_DIR:-Checkpoints/chaos}" && pwd)
RANDOM=${CHAOS_SEED:-1}
steps=${CHAOS_STEPS:-$((30 * n + 100))}
export DISTILL_BIN=$d
rm -rf "${work:?}"/*
log() { echo "chaos: $*" >&2; }

# 1. The teacher: the tiny config trained for 60 steps on the committed fortunes sample (a trained byte-level model).
sed -e "s|Tests/KDTrainTests/Fixtures/|$PWD/Tests/KDTrainTests/Fixtures/|" -e "s|dir: Checkpoints/tiny|dir: $work/teacher|" \
    -e "s/steps: 10/steps: 60/" -e "s/log_every: 1/log_every: 20/" Configs/tiny.yaml > "$work/teacher.yaml"
bash Launch/distill_mpi.sh 2 train --config "$work/teacher.yaml" --sample-tokens 0 > "$work/teacher.log" 2>&1
teacher=$work/teacher/$(cat "$work/teacher/latest")

# 2. The student run, written twice: the reference (uninterrupted) and the chaos run.
student() {  # $1 = checkpoint folder
    sed -e "s|Tests/KDTrainTests/Fixtures/|$PWD/Tests/KDTrainTests/Fixtures/|" -e "s|dir: Checkpoints/tiny|dir: $1|" \
        -e "s/steps: 10/steps: $steps/" -e "s/log_every: 1/log_every: 50/" -e "s/^  every: 5$/  every: 4\n  every_minutes: 0.05/" \
        -e "s/keep: 2/keep: 3/" -e "s/seed: 1234/seed: 99/" -e "s/ffn_dim: 172/ffn_dim: 160/" \
        ${CHAOS_MICRO_BATCH:+-e "s/micro_batch: 4/micro_batch: $CHAOS_MICRO_BATCH/" -e "s/grad_accum: 2/grad_accum: 1/"} Configs/tiny.yaml
    printf "teacher:\n  path: %s\ndistill:\n  objective: skew_rkl\n  kd_ratio: 0.5\nqat:\n  scheme: q8_0\n" "$teacher"
}
student "$work/reference" > "$work/reference.yaml"
student "$work/run" > "$work/run.yaml"
t0=$(date +%s.%N)
bash Launch/distill_mpi.sh 2 train --config "$work/reference.yaml" --sample-tokens 0 > "$work/reference.log" 2>&1
ref_s=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')
log "reference run: $steps steps in ${ref_s%.*} s"

# 3. The chaos run under the restart loop, and the killer.
cfg=$work/run.yaml
ranks() { pgrep -f "^$d train --config $cfg" || true; }
job() { pgrep -f "^mpirun .*$d train --config $cfg" || true; }
verified=$work/verified.txt
: > "$verified"
remember_verified() {  # every complete checkpoint that verifies now is remembered
    for c in "$work"/run/step_*; do
        [ -d "$c" ] || continue
        case "$c" in *.tmp-*) continue ;; esac
        grep -qx "$(basename "$c")" "$verified" && continue
        "$d" checkpoint verify "$c" > /dev/null 2>&1 && basename "$c" >> "$verified"
    done
    return 0
}
t0=$(date +%s.%N)
delay=${CHAOS_WRITE_DELAY:-0.4}
DISTILL_CHECKPOINT_WRITE_DELAY=$delay MAX_RESTARTS=$((n + 20)) RESTART_DELAY=0.2 \
    bash Launch/restart.sh 2 train --config "$cfg" --sample-tokens 0 > "$work/run.log" 2>&1 &
loop=$!
kills=0
declare -A by=([rank]=0 [mpirun]=0 [checkpoint-write]=0 [resume]=0)
wait_up() {  # until the job's np ranks run (a restart may be under way); fails when the run has ended
    for _ in $(seq 600); do
        kill -0 "$loop" 2>/dev/null || return 1
        [ "$(ranks | wc -l)" -eq 2 ] && return 0
        sleep 0.05
    done
    return 1
}
pause() {  # a random pause of $1 to $2 milliseconds
    local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
}
while [ "$kills" -lt "$n" ]; do
    wait_up || break
    kind=$((RANDOM % 4))
    victim=
    case $kind in
        0) pause 500 3000; mapfile -t r < <(ranks); [ ${#r[@]} -gt 0 ] && victim=${r[RANDOM % ${#r[@]}]}; what=rank ;;
        1) pause 500 3000; victim=$(job | head -1); what=mpirun ;;
        2) what=checkpoint-write
           for _ in $(seq 400); do
               tmp=$(ls -d "$work"/run/step_*.tmp-* 2>/dev/null | head -1 || true)
               [ -n "$tmp" ] && { victim=${tmp##*.tmp-}; break; }
               kill -0 "$loop" 2>/dev/null || break
               sleep 0.025
           done ;;
        3) pause 0 600; mapfile -t r < <(ranks); [ ${#r[@]} -gt 0 ] && victim=${r[RANDOM % ${#r[@]}]}; what=resume ;;
    esac
    [ -n "$victim" ] && kill -0 "$victim" 2>/dev/null || continue
    old=$(ranks | tr '\n' ' ')
    kill -9 "$victim" 2>/dev/null || continue
    kills=$((kills + 1))
    by[$what]=$((by[$what] + 1))
    # the job is gone when none of its ranks is left; then look at what it left behind
    for _ in $(seq 600); do
        left=0
        for p in $old; do kill -0 "$p" 2>/dev/null && left=1; done
        [ "$left" -eq 0 ] && break
        sleep 0.05
    done
    remember_verified
done
log "$kills kills sent; waiting for the run to finish"
rc=0
wait "$loop" || rc=$?
chaos_s=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')
remember_verified

# 4. The checks.
fail=0
[ "$rc" -eq 0 ] || { log "FAIL: the restart loop ended with exit code $rc (see $work/run.log)"; fail=1; }
last=$(cat "$work/run/latest" 2>/dev/null || echo none)
[ "$last" = "$(printf 'step_%08d' "$steps")" ] || { log "FAIL: the run ended at $last, not step $steps"; fail=1; }
mapfile -t complete < <(ls "$work/run" | grep -E '^step_[0-9]+$' | sort)
still=0 retired=0
while read -r c; do
    [ -n "$c" ] || continue
    if [ -d "$work/run/$c" ]; then
        if "$d" checkpoint verify "$work/run/$c" > /dev/null 2>&1; then still=$((still + 1)); else log "FAIL: $c verified once and no longer does"; fail=1; fi
    else
        newer=$(printf '%s\n' "${complete[@]}" | awk -v c="$c" '$0 > c' | wc -l)
        if [ "$newer" -ge 3 ]; then retired=$((retired + 1)); else log "FAIL: $c verified once and is gone with only $newer newer checkpoints"; fail=1; fi
    fi
done < "$verified"
match=yes
for f in model.safetensors optimizer.safetensors; do
    cmp -s "$work/reference/$(cat "$work/reference/latest")/$f" "$work/run/$last/$f" || match=no
done
[ "$match" = yes ] || { log "FAIL: the final $last differs from the uninterrupted run's"; fail=1; }
resumed_bad=0
while read -r dir; do
    [ -d "$dir" ] || continue
    "$d" checkpoint verify "$dir" > /dev/null 2>&1 || resumed_bad=$((resumed_bad + 1))
done < <(grep -o 'resumed from [^:]*' "$work/run.log" | sed 's/resumed from //' | sort -u)
[ "$resumed_bad" -eq 0 ] || { log "FAIL: $resumed_bad resumes read a checkpoint that does not verify"; fail=1; }
restarts=$(grep -c '^restart: the job failed' "$work/run.log" || true)
written=$(grep -c '^checkpoint .* written in' "$work/run.log" || true)
# distinct torn writes (a resume that is itself killed reports the same one again)
# (a run whose kills tore no write has none: grep's exit 1 must not end the script under pipefail)
torn=$({ grep -oE 'ignoring unfinished [^ ]+|skipping step_[0-9]+' "$work/run.log" || true; } | sort -u | wc -l)
resumes=$(grep -c 'resumed from' "$work/run.log" || true)
# the injected write pauses are not the kills' cost: their share (writes × delay) is taken out
lost=$(awk -v c="$chaos_s" -v r="$ref_s" -v k="$kills" -v w="$written" -v d="$delay" 'BEGIN { print (c - r - w * d) / (k > 0 ? k : 1) }')
{
    echo "| kills (rank / mpirun / mid-write / at resume) | restarts | resumes | run s (uninterrupted) | lost per kill (write pauses taken out) | checkpoints written | verified (still / retired by keep) | torn, skipped at resume | final state equal |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf "| %d (%d / %d / %d / %d) | %d | %d | %.0f (%.0f) | %.2f s | %d | %d (%d / %d) | %d | %s |\n" "$kills" "${by[rank]}" "${by[mpirun]}" \
        "${by[checkpoint-write]}" "${by[resume]}" "$restarts" "$resumes" "$chaos_s" "$ref_s" "$lost" "$written" "$(wc -l < "$verified")" "$still" "$retired" \
        "$torn" "$match"
} | tee "$work/chaos.md"
[ "$fail" -eq 0 ] && log "every check passed ($steps steps, seed ${CHAOS_SEED:-1})" || log "FAILED (logs in $work)"
exit "$fail"
