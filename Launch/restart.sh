#!/usr/bin/env bash
# The restart loop (in the spirit of torchrun's elastic restarts): runs Launch/distill_mpi.sh NP ARGS… --resume auto
# and, when the job dies, says why and relaunches it, up to MAX_RESTARTS times (default 3).
#   usage: Launch/restart.sh NP train --config FILE [more train options]
# A job ended by a full checkpoint disk (exit code 74) is not restarted either: restarting cannot free space.
# SIGINT / SIGTERM go to the running job (a graceful stop with a checkpoint; a second one aborts it) and end the loop:
# a job stopped on purpose is not restarted. Started in the background by a non-interactive shell, this script first
# takes SIGINT back from "ignored" (Launch/sigint_default.sh).
set -uo pipefail
source "$(dirname "$0")/sigint_default.sh"  # kill -INT works even when started with & (see there)
here="$(cd "$(dirname "$0")" && pwd)"
max=${MAX_RESTARTS:-3}
attempt=0
child=
stopping=0
forward() {
    stopping=1
    [ -n "$child" ] && kill -"$1" "$child" 2>/dev/null
}
trap 'forward INT' INT
trap 'forward TERM' TERM
while true; do
    "$here/distill_mpi.sh" "$@" --resume auto &
    child=$!
    while :; do
        wait "$child"
        rc=$?
        kill -0 "$child" 2>/dev/null || break  # wait also returns when a trapped signal arrives
    done
    child=
    [ "$rc" -eq 0 ] && exit 0
    if [ "$stopping" -eq 1 ]; then
        echo "restart: the job was stopped by a signal (exit code $rc); not restarting" >&2
        exit "$rc"
    fi
    if [ "$rc" -eq 74 ]; then
        echo "restart: the job stopped because its checkpoint disk is full (exit code 74); not restarting: free space, then run the same command again (it resumes)" >&2
        exit "$rc"
    fi
    if [ "$rc" -gt 128 ]; then why="killed by signal $((rc - 128))"; else why="exit code $rc"; fi
    if [ "$attempt" -ge "$max" ]; then
        echo "restart: the job failed ($why) and $max restarts are used up; giving up" >&2
        exit "$rc"
    fi
    attempt=$((attempt + 1))
    echo "restart: the job failed ($why); restart $attempt of $max from the newest checkpoint that verifies" >&2
    sleep "${RESTART_DELAY:-1}"
done
