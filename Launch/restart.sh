#!/usr/bin/env bash
# The restart loop (in the spirit of torchrun's elastic restarts): runs Launch/distill-mpi.sh NP ARGS… --resume auto
# and, when the job dies, says why and relaunches it, up to MAX_RESTARTS times (default 3).
#   usage: Launch/restart.sh NP train --config FILE [more train options]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
max=${MAX_RESTARTS:-3}
attempt=0
while true; do
    "$here/distill-mpi.sh" "$@" --resume auto
    rc=$?
    [ "$rc" -eq 0 ] && exit 0
    if [ "$rc" -gt 128 ]; then why="killed by signal $((rc - 128))"; else why="exit code $rc"; fi
    if [ "$attempt" -ge "$max" ]; then
        echo "restart: the job failed ($why) and $max restarts are used up; giving up" >&2
        exit "$rc"
    fi
    attempt=$((attempt + 1))
    echo "restart: the job failed ($why); restart $attempt of $max from the newest checkpoint that verifies" >&2
    sleep "${RESTART_DELAY:-1}"
done
