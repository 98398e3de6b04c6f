#!/usr/bin/env bash
# Training from tar shards under mpirun: each rank reads its own shards (rank r those with index
# r mod N) and makes the poorest rank's count of batches; two runs give identical bits, a stop and
# --resume auto on 2 ranks equals the straight run bit for bit, 3 ranks differ from 2 (other
# shards per rank), more ranks than shards is an exit-2 error naming data.dir before a run
# directory exists, and data.skip_bad counts and skips damaged members on every rank alike.
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
# data.skip_bad on 2 ranks: a training shard cut short (read by one rank) and a broken test label
# are left out and counted; the ranks still agree on the batches per epoch (no rank waits for a
# reduction the other never starts), and a stop and --resume auto equals the straight run.
cp -r "$work/sh" "$work/cut"
f=$(ls "$work/cut"/train-*.tar | sed -n 2p)
truncate -s 100000 "$f"
f=$(ls "$work/cut"/test-*.tar | sed -n 1p)
off=$(grep -abo '000000007.cls' "$f" | head -1 | cut -d: -f1)
printf 'x' | dd of="$f" bs=1 seek=$((off + 512)) conv=notrunc status=none
sh+=(--set data.dir="$work/cut" --set data.skip_bad=true)
run 2 s || bad "skip_bad on 2 ranks failed: $(tail -3 "$work/s.log")"
grep -q "left out 0 bad train examples and the rest of 1 shards" "$work/s.log" &&
  grep -q "member '000000007.cls'" "$work/s.log" && ok ||
  bad "skip_bad on 2 ranks should say what it left out: $(grep skip_bad "$work/s.log" | head -3)"
grep -q '"split": "train", "examples": [0-9]*, "skipped": 0, "cut_shards": 1' "$work/s/metrics.jsonl" &&
  ok || bad "skip_bad on 2 ranks: metrics.jsonl should count the cut shard: $(grep '"data"' "$work/s/metrics.jsonl")"
cmp -s "$work/a/final.safetensors" "$work/s/final.safetensors" && bad "skip_bad run read the same as the intact one" || ok
run 2 t --set train.stop_at_step=13
run 2 t --resume auto || bad "skip_bad 2-rank resume failed: $(tail -3 "$work/t.log")"
cmp -s "$work/s/final.safetensors" "$work/t/final.safetensors" &&
  [ "$(losses "$work/s")" = "$(losses "$work/t")" ] && ok ||
  bad "skip_bad on 2 ranks: stopped and resumed differs from the straight run"
report train_shards_mpi
