#!/usr/bin/env bash
# Training from tar shards under mpirun: each rank reads its own shards (rank r those with index
# r mod N) and makes the poorest rank's count of batches; two runs give identical bits, a stop and
# --resume auto on 2 ranks equals the straight run bit for bit, 3 ranks differ from 2 (other
# shards per rank), and more ranks than shards is an exit-2 error naming data.dir before a run
# directory exists.
# usage: train_shards_mpi.sh MPIRUN PATH/TO/natgrad
set -u
mpirun=$1 ng=$2
source "$(dirname "$0")/train_lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
small_yaml
"$ng" shards --from "$work/small.yaml" --out "$work/sh" --shard-mib 0.25 \
  --set data.synthetic.noise=1.0 >/dev/null 2>&1 || bad "natgrad shards failed"
sh=(--set data.name=shards --set data.dir="$work/sh" --set data.shuffle_buffer=32
  --set train.batch_size=48 --set train.steps=30 --set train.checkpoint_every=10)
run() { # NP OUT ARGS...
  local np=$1 out=$2
  shift 2
  timeout 300 "$mpirun" --oversubscribe -np "$np" "$ng" train --config "$work/small.yaml" \
    --out "$work/$out" "${sh[@]}" "$@" >"$work/$out.log" 2>&1
}
run 2 a || bad "2 ranks from shards failed: $(tail -3 "$work/a.log")"
run 2 b
cmp -s "$work/a/final.safetensors" "$work/b/final.safetensors" && ok || bad "2 ranks twice: weights differ"
run 2 c --set train.stop_at_step=13
run 2 c --resume auto || bad "2-rank resume failed: $(tail -3 "$work/c.log")"
cmp -s "$work/a/final.safetensors" "$work/c/final.safetensors" && ok || bad "2-rank resume from shards differs"
[ "$(losses "$work/a")" = "$(losses "$work/c")" ] && ok || bad "2-rank resumed losses differ"
run 3 d || bad "3 ranks from shards failed: $(tail -3 "$work/d.log")"
cmp -s "$work/a/final.safetensors" "$work/d/final.safetensors" && bad "3 ranks read the same as 2" || ok
n=$(ls "$work/sh"/train-*.tar | wc -l)
run $((n + 1)) e --set train.batch_size=$((n + 1))
status=$?
[ $status -eq 2 ] && grep -q "data.dir: $n shards" "$work/e.log" && [ ! -e "$work/e" ] && ok ||
  bad "$((n + 1)) ranks on $n shards: status $status, want 2 naming data.dir and no run directory: $(grep error "$work/e.log" | head -2)"
report train_shards_mpi
