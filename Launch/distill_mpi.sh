#!/usr/bin/env bash
# Runs `distill ARGS…` on NP ranks with mpirun and sane defaults:
#   usage: Launch/distill_mpi.sh NP ARGS…       e.g. Launch/distill_mpi.sh 2 train --config Configs/tiny.yaml
# - kernel threads per rank = cores / ranks on this node (distill's default; at least 1), so ranks × threads ≤ cores,
#   and OpenBLAS on one thread (distill splits its products over its own threads);
# - --allow-run-as-root only when run as root, --oversubscribe only when NP exceeds the cores;
# - the progress line is redrawn in place only when this script's output is a terminal;
# - Ctrl-C / SIGINT / SIGTERM stop the run gracefully (a checkpoint after the current step), a second one aborts —
#   also when this script was started in the background by a non-interactive shell (Launch/sigint_default.sh);
# - on a single host, shared memory between the ranks (Open MPI's vader, whose single-copy transfers through
#   process_vm_readv let the gradient all-reduce run behind backward: 97–98% hidden against 0–20% over TCP, 168 against
#   378 ms blocking for the 62 MiB recipes' 427 MiB, Zen 4) in a private folder of /dev/shm removed when mpirun ends,
#   however it ends; TCP over loopback where the kernel refuses process_vm_readv (a seccomp profile: without single
#   copies vader is no faster than TCP) or /dev/shm is missing. DISTILL_MPI_ARGS replaces that choice (e.g. --hostfile
#   and TCP between hosts), DISTILL_MPI_TRANSPORT=tcp keeps TCP on one host (shm, the default, takes shared memory where it can).
# DISTILL_BIN picks the binary (default .build/release/distill).
set -euo pipefail
source "$(dirname "$0")/sigint_default.sh"  # kill -INT works even when started with & (see there)
here="$(cd "$(dirname "$0")/.." && pwd)"
np=${1:?usage: Launch/distill_mpi.sh NP ARGS…}
shift
bin=${DISTILL_BIN:-$here/.build/release/distill}
[ -x "$bin" ] || { echo "distill_mpi: expected the distill binary at $bin (swift build -c release), found none" >&2; exit 2; }
cores=$(nproc)
flags=(-np "$np" --bind-to none -x OPENBLAS_NUM_THREADS=1 -x PATH)  # distill splits its products over its own threads
[ -n "${LD_LIBRARY_PATH:-}" ] && flags+=(-x LD_LIBRARY_PATH)
# mpirun gives ranks a pseudo-terminal even when its own output goes to a file or pipe: tell rank 0 which it is, so
# the progress line is redrawn in place only on a real terminal
[ -t 1 ] || export DISTILL_PROGRESS=plain
[ -n "${DISTILL_PROGRESS:-}" ] && flags+=(-x DISTILL_PROGRESS)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
[ "$np" -gt "$cores" ] && flags+=(--oversubscribe)
# single_copy: whether this process may read its own memory through process_vm_readv (what vader's single copies
# call; a seccomp profile that forbids it forbids it here too)
single_copy() {
    command -v python3 > /dev/null || return 1
    python3 - <<'PY' 2> /dev/null
import ctypes, os, sys
class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
libc = ctypes.CDLL(None, use_errno=True)
src, dst = ctypes.create_string_buffer(b"distill", 8), ctypes.create_string_buffer(8)
local, remote = IOVec(ctypes.addressof(dst), 8), IOVec(ctypes.addressof(src), 8)
n = libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
sys.exit(0 if n == 8 and dst.raw == src.raw else 1)
PY
}
shm=
case "${DISTILL_MPI_TRANSPORT:-shm}" in
    shm|tcp) ;;
    *) echo "distill_mpi: expected DISTILL_MPI_TRANSPORT=shm or tcp, found '$DISTILL_MPI_TRANSPORT'" >&2; exit 2 ;;
esac
if [ -z "${DISTILL_MPI_ARGS:-}" ]; then
    if [ "${DISTILL_MPI_TRANSPORT:-shm}" != tcp ] && [ -d /dev/shm ] && [ -w /dev/shm ] && single_copy &&
        shm=$(mktemp -d /dev/shm/distill-mpi.XXXXXX); then
        # the segments live in this launcher's folder: a killed mpirun leaves none behind in /dev/shm
        trap 'rm -rf "$shm"' EXIT
        flags+=(--mca btl vader,self --mca btl_vader_backing_directory "$shm" --mca oob_tcp_if_include lo)
    else
        flags+=(--mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
    fi
else
    # shellcheck disable=SC2206
    flags+=($DISTILL_MPI_ARGS)
fi
# A first SIGINT/SIGTERM to this script becomes SIGUSR1 to mpirun, which forwards it to every rank: they finish the
# step, checkpoint and exit 0. (mpirun itself would kill the ranks one second after a SIGINT/SIGTERM, so it runs in
# its own session where a terminal's Ctrl-C does not reach it.) A second signal aborts.
setsid mpirun "${flags[@]}" "$bin" "$@" &
pid=$!
signals=0
forward() {
    signals=$((signals + 1))
    if [ "$signals" -eq 1 ]; then
        echo "distill_mpi: stopping after the current step (signal again to abort)" >&2
        kill -USR1 "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
}
trap forward INT TERM
rc=0
while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break  # wait also returns when a trapped signal arrives
done
exit "$rc"
