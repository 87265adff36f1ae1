#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces kdA and kdB joined by a veth pair (10.77.0.1 ↔ 10.77.0.2), OpenMPI's
# remote launcher pointed at a small agent that runs commands with `ip netns exec` (no ssh), ranks talking TCP across
# the veth. Runs `distill ARGS…` on 2 ranks, one per namespace, then deletes the namespaces. Needs root and iproute2.
#   usage: Launch/lab/test_multihost.sh train --config Configs/tiny.yaml
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin=${DISTILL_BIN:-$here/.build/release/distill}
[ "$(id -u)" -eq 0 ] || { echo "test_multihost: expected root (network namespaces), found uid $(id -u)" >&2; exit 2; }
command -v ip >/dev/null || { echo "test_multihost: expected iproute2 (ip), found none" >&2; exit 2; }
tag=$$
A=kdA$tag B=kdB$tag
work=$(mktemp -d)
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add "va$tag" type veth peer name "vb$tag"
ip link set "va$tag" netns "$A"
ip link set "vb$tag" netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev "va$tag"
ip -n "$B" addr add 10.77.0.2/24 dev "vb$tag"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "va$tag" up
ip -n "$B" link set "vb$tag" up
cat > "$work/agent" <<AGENT
#!/bin/sh
# OpenMPI calls: agent HOST COMMAND…  → run COMMAND inside that host's namespace
host=\$1; shift
case "\$host" in
  10.77.0.1) ns=$A ;;
  10.77.0.2) ns=$B ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$work/agent"
echo "multihost: ranks on 10.77.0.1 ($A) and 10.77.0.2 ($B), TCP over the veth"
ip netns exec "$A" mpirun --allow-run-as-root -np 2 --host 10.77.0.1:1,10.77.0.2:1 --bind-to none \
    --mca plm_rsh_agent "$work/agent" --mca btl tcp,self \
    --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
    -x OPENBLAS_NUM_THREADS=1 -x PATH -x HOME --wdir "$PWD" "$bin" "$@"
