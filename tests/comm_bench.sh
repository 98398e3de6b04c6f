#!/usr/bin/env bash
# natgrad comm-bench end to end under mpirun -np 3 (nodes 2+1): every algorithm of `--algo all`
# over a few sizes, no wrong element, a JSON row per size and algorithm, an auto table; bad
# options stop it with status 2 before MPI starts.
set -u
mpirun=$1 natgrad=$2
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

timeout 120 "$mpirun" --oversubscribe -np 3 "$natgrad" comm-bench --ranks-per-node 2 --min 1K \
  --max 64K --factor 8 --iters 2 --warmup 1 --dtype bf16 --link-rate 1gbit \
  --json "$dir/cb.json" --write-table "$dir/table.json" >"$dir/out" 2>&1
rc=$?
cat "$dir/out"
[ $rc -eq 0 ] || fail "comm-bench exited $rc"
grep -q "3 ranks on 2 nodes" "$dir/out" || fail "the header does not show 3 ranks on 2 nodes"
grep -q "^# 0 wrong elements in all" "$dir/out" || fail "some element was wrong"
# 3 sizes (1K, 8K, 64K) x 8 algorithms, each a row of the table and of the JSON
rows=$(grep -cE "^ +[0-9]+ +[0-9]+ +bf16 " "$dir/out")
[ "$rows" -eq 24 ] || fail "expected 24 table rows, saw $rows"
json_rows=$(grep -c '"busbw_gbs"' "$dir/cb.json")
[ "$json_rows" -eq 24 ] || fail "expected 24 JSON rows, saw $json_rows"
grep -q '"allreduce_table"' "$dir/table.json" || fail "no auto table written"
grep -q '"max_bytes": -1' "$dir/table.json" || fail "the auto table has no last row for any size"

# On CUDA (a build whose natgrad reports a device; the emulation build's NCCL takes 3 ranks on one
# machine, a GPU's NCCL only one rank per GPU, so this runs where `info` lists 3 or more devices
# or an emulated one): the NCCL backend, every algorithm exact.
if "$natgrad" info | grep -qE '^devices: +([3-9]|[1-9][0-9]+) |emulated CUDA device'; then
  timeout 120 "$mpirun" --oversubscribe -np 3 "$natgrad" comm-bench --device cuda --ranks-per-node 2 \
    --min 1K --max 64K --factor 8 --iters 2 --warmup 1 --dtype f16 >"$dir/cuda" 2>&1
  rc=$?
  cat "$dir/cuda"
  [ $rc -eq 0 ] || fail "comm-bench --device cuda exited $rc"
  grep -q "nccl" "$dir/cuda" || fail "comm-bench --device cuda did not use the nccl backend"
  grep -q "^# 0 wrong elements in all" "$dir/cuda" || fail "some element was wrong on CUDA"
fi

"$natgrad" comm-bench --algo tree >"$dir/bad" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -q -- "--algo tree" "$dir/bad" || fail "a bad --algo should exit 2 naming it"
echo "comm_bench: ok"
