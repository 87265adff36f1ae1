# Sourced first by the launchers (distill_mpi.sh, restart.sh). Started with `&` from a non-interactive shell (nohup,
# ssh host 'cmd &', a scheduler's script), bash inherits SIGINT ignored and no trap can take it back: run the script
# once more with SIGINT's default disposition (coreutils env; same pid, same arguments), so that `kill -INT` reaches
# its trap. The re-run finds SIGINT no longer ignored and goes on.
if [ -r /proc/$$/status ] && (( 0x$(awk '/^SigIgn:/ {print $2}' /proc/$$/status) & 2 )); then
    exec env --default-signal=INT bash "$0" "$@"
fi
