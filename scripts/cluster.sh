#!/usr/bin/env bash
# A multi-node MPI cluster on one machine, for tests and figures: each "node" is a network
# namespace with its own address and (at run time) its own hostname, all plugged into one
# switch (a Linux bridge in a namespace of its own), optionally with the link rate shaped by
# tc tbf so that inter-node bandwidth is far below intra-node shared memory.
#
#   scripts/cluster.sh up NODES [--link-rate RATE]    RATE as tc writes it: 100mbit, 1gbit, ...
#   scripts/cluster.sh run NODES RPN [MPIRUN-OPTION...] -- CMD [ARG...]
#   scripts/cluster.sh status | check | down
#
# Environment: NG_CLUSTER_PREFIX (default ng: namespaces ngnode0.., ngswitch) and
# NG_CLUSTER_NET (default 10.213.77: the /24, whose .1.. are the nodes), so that a test can
# build its own cluster beside one a person is using.
#
# What `up` creates, and `down` (or a failed `up`) removes: the namespaces PREFIXnode0..N-1 and
# PREFIXswitch (the veths and the bridge live inside them and go with them), and
# /etc/netns/PREFIXnodeI/hosts, which `ip netns exec` shows as /etc/hosts inside that node only
# (the shared /etc/hosts of the machine is never edited). Nothing is added to the root
# namespace, so the /24 exists only between the namespaces.
# Exit status 77 means the machine does not allow this (not root, no ip/tc/unshare, or
# namespaces refused), so that tests report "skipped".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=${NG_CLUSTER_PREFIX:-ng}
net=${NG_CLUSTER_NET:-10.213.77}
switch=${prefix}switch
max_nodes=64 # bounds every loop over nodes; far more than 2 cores can drive anyway

die() { echo "cluster.sh: $*" >&2; exit 1; }
skip() { echo "cluster.sh: skipped: $*" >&2; exit 77; }
usage() {
  sed -n '7,9p' "$0" | sed 's/^# *//' >&2
  exit 2
}

[[ $prefix =~ ^[a-z][a-z0-9]{0,11}$ ]] || die "NG_CLUSTER_PREFIX must be 1-12 of [a-z0-9], got '$prefix'"
# Only private 10.x.y networks: the script must never route traffic towards real addresses.
[[ $net =~ ^10\.([0-9]{1,3})\.([0-9]{1,3})$ ]] && ((BASH_REMATCH[1] < 256 && BASH_REMATCH[2] < 256)) ||
  die "NG_CLUSTER_NET must be the first three octets of a 10.x.y.0/24, got '$net'"

node_name() { echo "${prefix}node$1"; }

# Says why the machine cannot host namespaces, or nothing when it can.
why_not_possible() {
  [ "$(id -u)" -eq 0 ] || { echo "needs root (ip netns, tc)"; return; }
  local tool
  for tool in ip tc unshare; do
    command -v "$tool" >/dev/null || { echo "'$tool' not found (scripts/install-deps.sh installs it)"; return; }
  done
  # unshare --uts is what gives each node its hostname; refused in some containers.
  unshare --uts true 2>/dev/null || echo "unshare --uts is not allowed here"
}

existing_namespaces() { # the namespaces of this prefix that exist now, one a line
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}(node[0-9]+|switch)$" || true
}

# Kills processes still living in namespace $1 (orted or ranks of a run that was interrupted):
# the namespace's network would otherwise outlive `ip netns del` with them.
kill_inside() {
  local ns=$1 pids try
  # shellcheck disable=SC2086 # $pids is a list of pids, one word each
  for try in 1 2 3 4 5; do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    if [ "$try" -lt 4 ]; then
      kill -TERM $pids 2>/dev/null || true
    else
      kill -KILL $pids 2>/dev/null || true
    fi
    sleep 0.5
  done
  echo "cluster.sh: processes still in $ns: $pids" >&2
}

down() {
  local ns
  for ns in $(existing_namespaces); do
    kill_inside "$ns"
    ip netns del "$ns" 2>/dev/null || echo "cluster.sh: could not delete namespace $ns" >&2
  done
  local i
  for ((i = 0; i < max_nodes; i++)); do
    rm -rf "/etc/netns/$(node_name "$i")"
  done
  # /etc/netns exists only for clusters like this one; leave it only if someone else uses it.
  rmdir /etc/netns 2>/dev/null || true
}

# Prints the tbf burst (bytes) for a rate such as 100mbit or 1gbit: 4 ms worth of the rate, at
# least 32 KiB so that a handful of full-size frames pass, which keeps tbf accurate at any rate.
burst_for() {
  local rate=$1 num unit bps
  [[ $rate =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]] || die "--link-rate: want a number and bit|kbit|mbit|gbit, got '$rate'"
  num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2]}
  case $unit in
    bit) bps=$num ;;
    kbit) bps=$((num * 1000)) ;;
    mbit) bps=$((num * 1000000)) ;;
    gbit) bps=$((num * 1000000000)) ;;
  esac
  ((bps >= 1000000)) || die "--link-rate: below 1mbit MPI start-up alone would take minutes"
  local b=$((bps / 8 / 250))
  ((b >= 32768)) || b=32768
  echo "$b"
}

up() {
  local n=${1:-}
  shift || true
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= max_nodes)) || die "up: NODES must be 1..$max_nodes"
  local rate="" burst=""
  while [ $# -gt 0 ]; do
    case $1 in
      --link-rate) [ $# -ge 2 ] || usage; rate=$2; shift 2 ;;
      --link-rate=*) rate=${1#*=}; shift ;;
      *) usage ;;
    esac
  done
  [ -z "$rate" ] || burst=$(burst_for "$rate")
  local why
  why=$(why_not_possible)
  [ -z "$why" ] || skip "$why"
  [ -z "$(existing_namespaces)" ] || die "a cluster '$prefix' exists already (see status); run down first"

  # From here on a failure removes whatever was made.
  trap 'echo "cluster.sh: up failed, removing what was made" >&2; down' EXIT
  if ! ip netns add "$switch" 2>/dev/null; then
    trap - EXIT
    down
    skip "ip netns add is not allowed here"
  fi
  ip -n "$switch" link add br0 type bridge
  ip -n "$switch" link set br0 up
  ip -n "$switch" link set lo up
  local i ns hosts
  hosts=$(
    printf "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
    for ((i = 0; i < n; i++)); do echo "$net.$((i + 1)) $(node_name "$i")"; done
  )
  for ((i = 0; i < n; i++)); do
    ns=$(node_name "$i")
    ip netns add "$ns"
    # One cable per node: v$i on the switch, eth0 in the node.
    ip -n "$switch" link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n "$switch" link set "v$i" master br0 up
    ip -n "$ns" addr add "$net.$((i + 1))/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    if [ -n "$rate" ]; then
      # The node's NIC: its sending side is shaped in the node, its receiving side on the
      # switch port, so each direction of the link carries at most RATE, as full duplex does.
      ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 100ms
      ip netns exec "$switch" tc qdisc add dev "v$i" root tbf rate "$rate" burst "$burst" latency 100ms
    fi
    mkdir -p "/etc/netns/$ns"
    printf '%s\n' "# natgrad cluster.sh ($prefix): removed by cluster.sh down" "$hosts" >"/etc/netns/$ns/hosts"
  done
  trap - EXIT
  echo "cluster.sh: $n nodes up: $(node_name 0)..$(node_name $((n - 1))) on $net.0/24${rate:+, links shaped to $rate}"
}

status() {
  local list ns
  list=$(existing_namespaces)
  if [ -z "$list" ]; then
    echo "cluster.sh: no cluster '$prefix'"
    return 0
  fi
  for ns in $list; do
    if [ "$ns" = "$switch" ]; then
      echo "$ns: bridge br0 with ports $(ip -n "$ns" -o link show master br0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')"
    else
      echo "$ns: $(ip -n "$ns" -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}')" \
        "qdisc: $(ip netns exec "$ns" tc qdisc show dev eth0 2>/dev/null | head -1)" \
        "processes: $(ip netns pids "$ns" 2>/dev/null | wc -l)"
    fi
  done
}

run() {
  local n=${1:-} rpn=${2:-}
  [ $# -ge 2 ] || usage
  shift 2
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= max_nodes)) || die "run: NODES must be 1..$max_nodes"
  [[ $rpn =~ ^[0-9]+$ ]] && ((rpn >= 1 && rpn <= 256)) || die "run: RPN must be 1..256"
  local why
  why=$(why_not_possible)
  [ -z "$why" ] || skip "$why"
  local extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    extra+=("$1")
    shift
  done
  [ "${1:-}" = "--" ] && [ $# -ge 2 ] || usage
  shift
  local i
  for ((i = 0; i < n; i++)); do
    ip netns list | awk '{print $1}' | grep -x "$(node_name "$i")" >/dev/null ||
      die "run: node $(node_name "$i") does not exist; run: scripts/cluster.sh up $n"
  done
  # Global, not local: the EXIT trap runs after run() has returned.
  run_tmp=$(mktemp -d)
  trap 'rm -rf "$run_tmp"' EXIT
  for ((i = 0; i < n; i++)); do echo "$(node_name "$i") slots=$rpn"; done >"$run_tmp/hostfile"
  local root_opt=()
  [ "$(id -u)" -ne 0 ] || root_opt=(--allow-run-as-root)
  # mpirun lives in node 0, with node 0's hostname, so that Open MPI takes node 0 for itself and
  # reaches the other nodes through the agent, as it would through ssh on a real cluster. The
  # transports are pinned to shared memory within a node and TCP on the cluster's /24 between
  # nodes (vader's single-copy mechanisms need ptrace rights that namespaces may not grant).
  # All ranks of all nodes share this machine's cores, so waiting ranks yield the CPU rather than
  # spin (which on 2 cores costs the busy ranks most of their time); an explicit
  # --mca mpi_yield_when_idle 0 before -- still wins over this default.
  export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
  setsid ip netns exec "$(node_name 0)" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$(node_name 0)" \
    mpirun "${root_opt[@]}" --oversubscribe --bind-to none \
    --hostfile "$run_tmp/hostfile" -np $((n * rpn)) \
    --mca plm_rsh_agent "$here/cluster-rsh.sh" \
    --mca btl tcp,self,vader --mca btl_vader_single_copy_mechanism none \
    --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
    "${extra[@]}" "$@" <&0 &
  # setsid, ip netns exec, unshare and sh all exec, so this is mpirun's pid. mpirun has a
  # session of its own because a second SIGTERM makes it quit without ending its ranks, and
  # `timeout` signals the whole process group: this script passes on one signal, once.
  mpirun_pid=$!
  trap 'kill -TERM "$mpirun_pid" 2>/dev/null || true' TERM INT HUP
  local status=0 _
  for _ in 1 2 3; do # wait returns early (status > 128) when a trapped signal arrives
    status=0
    wait "$mpirun_pid" || status=$?
    kill -0 "$mpirun_pid" 2>/dev/null || break
  done
  return "$status"
}

# up and down of one prefix one at a time: two test runs must not interleave their ip commands.
take_lock() {
  local dir=/run/lock
  [ -d "$dir" ] || dir=/tmp
  exec 9>"$dir/natgrad-cluster-$prefix.lock"
  flock -w 60 9 || die "another cluster.sh up/down for '$prefix' holds the lock"
}

cmd=${1:-}
shift || true
case $cmd in
  up)
    why=$(why_not_possible)
    [ -z "$why" ] || skip "$why"
    take_lock
    up "$@"
    ;;
  down)
    [ "$(id -u)" -eq 0 ] || skip "needs root"
    take_lock
    down
    ;;
  check) # exit 0 where a cluster can be made, 77 (with the reason) where it cannot
    why=$(why_not_possible)
    [ -z "$why" ] || skip "$why"
    ;;
  status) status ;;
  run) run "$@" ;;
  *) usage ;;
esac
