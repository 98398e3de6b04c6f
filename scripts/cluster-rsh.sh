#!/usr/bin/env bash
# The "ssh" of the namespace cluster (scripts/cluster.sh): Open MPI's rsh launcher calls it,
# as --mca plm_rsh_agent, as `cluster-rsh.sh [OPTIONS] HOST CMD...` to start its daemon on HOST.
# HOST is a node namespace made by cluster.sh; the command runs there, in a UTS namespace of its
# own whose hostname is HOST, so that Open MPI (and MPI_Comm_split_type) sees distinct nodes.
set -euo pipefail
# Options an ssh would take (Open MPI may pass some, e.g. -x) mean nothing here.
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
  shift
done
[ $# -ge 2 ] || { echo "cluster-rsh.sh: usage: cluster-rsh.sh [OPTIONS] HOST CMD..." >&2; exit 255; }
host=$1
shift
# Only the cluster's own nodes: this agent must never lead anywhere else.
if ! [[ $host =~ ^[a-z][a-z0-9]*node[0-9]+$ ]] || ! ip netns list | awk '{print $1}' | grep -x "$host" >/dev/null; then
  echo "cluster-rsh.sh: '$host' is not a node of a cluster made by scripts/cluster.sh" >&2
  exit 255
fi
# As ssh does, the remote command is the arguments joined by spaces, read by a shell.
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$*"' "$host" "$@"
