#!/usr/bin/env bash
# The namespace cluster (scripts/cluster.sh) as MPI sees it: 2 nodes x 2 ranks must give two
# distinct hostnames with local ranks 0 and 1 each (MPI_Comm_split_type SHARED), and traffic
# between nodes must go through the shaped link (no faster than its rate). Skipped (77) where
# the machine allows no namespaces. With the last two arguments, also on 2 nodes x 2 ranks whose
# nodes MPI finds by itself: every all-reduce algorithm equals flat bit for bit
# (test_comm_mpi), and natgrad train with the hierarchical all-reduce gives one rank's losses.
# usage: cluster.sh PATH/TO/mpi_topology SOURCE_DIR [PATH/TO/test_comm_mpi PATH/TO/natgrad]
set -euo pipefail
topo=$1
cluster=$2/scripts/cluster.sh
comm_test=${3:-} ng=${4:-}
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

if [ -n "$comm_test" ]; then
  out=$(timeout -k 5 120 bash "$cluster" run 2 2 -- "$comm_test" --max-count 1001 --expect-ranks-per-node 2 2>&1) || true
  check "every all-reduce algorithm equals flat on 2 nodes x 2 ranks" \
    [ "$(grep -c ' 0 failed' <<<"$out")" -eq 4 ]
  grep -q ' 0 failed' <<<"$out" || echo "$out" | tail -20
fi
if [ -n "$ng" ]; then
  work=$(mktemp -d)
  trap 'bash "$cluster" down; rm -rf "$work"' EXIT
  cat >"$work/dp.yaml" <<'YAML'
seed: 3
model: {arch: mlp, width: 32, depth: 2}
data: {name: synthetic, synthetic: {train: 640, test: 200, noise: 3.0}, augment: {crop_pad: 1}}
train: {batch_size: 64, steps: 12, log_every: 1, checkpoint_every: 12, eval_every: 12}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
comm: {allreduce: hier_rs, bucket_mib: 0.001}
YAML
  "$ng" train --config "$work/dp.yaml" --out "$work/one" >/dev/null 2>&1 || echo "one-rank run failed"
  timeout -k 5 120 bash "$cluster" run 2 2 -- "$ng" train --config "$work/dp.yaml" --out "$work/four" \
    >"$work/four.log" 2>&1 || tail -5 "$work/four.log"
  loss() { grep '"type": "train"' "$1/metrics.jsonl" 2>/dev/null | sed 's/.*"loss": \([^,]*\),.*/\1/'; }
  rel=$(paste <(loss "$work/one") <(loss "$work/four") | awk '{ d = $1 - $2; d = d < 0 ? -d : d;
    if (d / $1 > m) m = d / $1; n++ } END { if (n != 12) print "inf"; else printf "%.3g", m }')
  check "natgrad train on 2 nodes x 2 ranks (hier_rs) gives one rank's losses (max rel. diff $rel)" \
    awk -v r="$rel" 'BEGIN { exit !(r != "inf" && r <= 1e-5) }'
fi
exit "$fail"
