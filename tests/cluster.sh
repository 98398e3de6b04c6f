#!/usr/bin/env bash
# The namespace cluster (scripts/cluster.sh) as MPI sees it: 2 nodes x 2 ranks must give two
# distinct hostnames with local ranks 0 and 1 each (MPI_Comm_split_type SHARED), and traffic
# between nodes must go through the shaped link (no faster than its rate). Skipped (77) where
# the machine allows no namespaces.
# usage: cluster.sh PATH/TO/mpi_topology SOURCE_DIR
set -euo pipefail
topo=$1
cluster=$2/scripts/cluster.sh
# A cluster of its own (names ngtest*, 10.213.78.0/24), beside any a person has up.
export NG_CLUSTER_PREFIX=ngtest NG_CLUSTER_NET=10.213.78
rate_mbit=200

# Not root, no ip/tc/unshare: skipped, before touching anything.
status=0
bash "$cluster" check || status=$?
[ "$status" -eq 0 ] || exit "$status"

# Test runs from several build trees would share the names: one at a time.
lockdir=/run/lock
[ -d "$lockdir" ] || lockdir=/tmp
exec 8>"$lockdir/natgrad-cluster-test.lock"
flock -w 90 8 || { echo "cluster test: another run holds $lockdir/natgrad-cluster-test.lock"; exit 1; }

# A cluster left by a killed run is ours to remove; then always remove what this run made.
bash "$cluster" down >/dev/null 2>&1 || true
trap 'bash "$cluster" down' EXIT
status=0
bash "$cluster" up 2 --link-rate "${rate_mbit}mbit" || status=$?
if [ "$status" -eq 77 ]; then
  exit 77
fi
[ "$status" -eq 0 ] || { echo "cluster test: up failed ($status)"; exit 1; }

out=$(timeout -k 5 60 bash "$cluster" run 2 2 -- "$topo" --bw 2) || {
  echo "cluster test: run failed ($?):"
  echo "$out"
  exit 1
}
echo "$out"

fail=0
check() { # check DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fail=1; fi
}
ranks=$(grep -c '^rank ' <<<"$out" || true)
check "4 ranks report" [ "$ranks" -eq 4 ]
hosts=$(awk '/^rank /{print $6}' <<<"$out" | sort -u)
check "2 distinct hostnames ($(tr '\n' ' ' <<<"$hosts"))" [ "$(wc -l <<<"$hosts")" -eq 2 ]
for h in $hosts; do
  # Each node: local ranks exactly 0 and 1, and every rank there sees a local size of 2.
  locals=$(awk -v h="$h" '$1=="rank" && $6==h {print $8 "/" $10}' <<<"$out" | sort | tr '\n' ' ')
  check "node $h has local ranks 0/2 1/2 (got $locals)" [ "$locals" = "0/2 1/2 " ]
done
# Rank 0 shares a node with rank 1 and not with ranks 2 and 3 (mapping by slot).
check "ranks 0,1 on one node and 2,3 on the other" \
  [ "$(awk '/^bw /{print $2 $6}' <<<"$out" | tr '\n' ' ')" = "0<->1Y 0<->2N 0<->3N " ]
# tbf lets nothing through faster than its rate (plus a burst of 4 ms worth): an inter-node
# figure above it would mean the bytes did not cross the shaped veths.
for peer in 2 3; do
  mbit=$(awk -v p="0<->$peer" '$1=="bw" && $2==p {printf "%d", $10}' <<<"$out")
  within=no
  [ -n "$mbit" ] && [ "$mbit" -le $((rate_mbit * 11 / 10)) ] && [ "$mbit" -ge $((rate_mbit / 10)) ] && within=yes
  check "inter-node 0<->$peer ${mbit:-?} Mbit/s within the ${rate_mbit} Mbit/s link" [ "$within" = yes ]
done
exit "$fail"
