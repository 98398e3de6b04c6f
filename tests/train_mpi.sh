#!/usr/bin/env bash
# natgrad train under mpirun, end to end: N ranks with global batch B give one rank's losses at
# batch B (float tolerance) for flat, ring and hierarchical all-reduce and 2+1 / 2+2 simulated
# nodes; the same N twice gives identical bits; stop + --resume auto on N ranks is bit-exact (with
# sharded K-FAC state); distributed K-FAC follows one process's K-FAC; a step whose gradient is
# not finite is skipped by every rank; a bad global batch is a clear exit 2; SIGTERM to mpirun
# stops every rank at one step and resumes bit-exactly; a rank killed with SIGKILL ends the job
# within seconds, and --resume auto then finishes the run.
# usage: train_mpi.sh MPIRUN PATH/TO/natgrad
set -u
mpirun=$1 ng=$2
source "$(dirname "$0")/train_lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
run() { # NP OUT ARGS...: a bounded mpirun of natgrad train
  local np=$1 out=$2
  shift 2
  timeout 300 "$mpirun" --oversubscribe -np "$np" "$ng" train --config "$work/dp.yaml" \
    --out "$work/$out" "$@" >"$work/$out.log" 2>&1
}
cat >"$work/dp.yaml" <<'YAML'
seed: 3
model: {arch: mlp, width: 32, depth: 2}
data:
  name: synthetic
  synthetic: {train: 624, test: 200, noise: 3.0}
  augment: {crop_pad: 1, hflip: true}
train: {batch_size: 48, steps: 26, log_every: 1, checkpoint_every: 13, eval_every: 13}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.001}
comm: {bucket_mib: 0.001}
YAML
# Largest relative difference between the losses of two runs (same steps).
maxrel() {
  paste <(losses "$work/$1") <(losses "$work/$2") | awk '
    { if ($1 != $3) { print "inf"; exit } d = $2 - $4; d = d < 0 ? -d : d; r = d / ($2 < 0 ? -$2 : $2)
      if (r > m) m = r; n++ }
    END { if (n == 0) print "inf"; else printf "%.3g\n", m }'
}
close_to() { # A B TOL WHAT
  local r
  r=$(maxrel "$1" "$2")
  if awk -v r="$r" -v t="$3" 'BEGIN { exit !(r != "inf" && r <= t) }'; then ok; else bad "$4: losses differ by $r (tolerance $3)"; fi
}

"$ng" train --config "$work/dp.yaml" --out "$work/one" >"$work/one.log" 2>&1 || bad "one rank failed: $(tail -3 "$work/one.log")"
for spec in "2 flat" "2 ring" "3 hier_rs 2" "4 hier_rs 2" "4 hier_leader:ring/flat 2" "4 torus 2"; do
  set -- $spec
  name="np$1-${2//[:\/]/_}"
  args=(--set "comm.allreduce=$2")
  [ $# -ge 3 ] && args+=(--set "comm.ranks_per_node=$3")
  run "$1" "$name" "${args[@]}" || bad "$name failed: $(tail -3 "$work/$name.log")"
  close_to one "$name" 1e-5 "$1 ranks with $2 against one rank"
done
# A global batch that does not split over the ranks is refused before anything is written.
run 3 bad3 --set train.batch_size=50
rc=$?
if [ $rc -eq 2 ] && grep -q "train.batch_size: 50 is not a multiple of the 3 ranks" "$work/bad3.log"; then ok; else bad "batch 50 on 3 ranks: exit $rc, $(tail -2 "$work/bad3.log")"; fi
[ -e "$work/bad3" ] && bad "a refused run left its directory behind" || ok
# Bad comm and distributed K-FAC settings: exit 2 naming the key or file, nothing written.
printf '{"allreduce_table": [{"max_bytes": 1e308, "algo": "ring"}]}\n' >"$work/bad-table.json"
for spec in "1 comm.allreduce=hier_rx comm.allreduce" "1 comm.table=$work/none.json comm.table" \
  "2 comm.table=$work/bad-table.json bad-table.json" \
  "4 kfac.grad_worker_fraction=0.3 kfac.grad_worker_fraction"; do
  set -- $spec
  run "$1" badc --set "$2" --set kfac.enabled=true
  rc=$?
  [ $rc -eq 2 ] && grep -q "$3" "$work/badc.log" && ok || bad "--set $2 on $1 ranks: exit $rc, $(grep error "$work/badc.log" | head -2)"
  [ -e "$work/badc" ] && bad "--set $2 left its run directory behind" || ok
done
# Same ranks twice: same bits.
run 2 again --set comm.allreduce=flat || bad "second 2-rank run failed"
cmp -s "$work/np2-flat/final.safetensors" "$work/again/final.safetensors" && ok || bad "two 2-rank runs differ"
# Stop at step 13 on 4 ranks, resume: the uninterrupted run's bits.
run 4 sr --set comm.allreduce=hier_rs --set comm.ranks_per_node=2 --set train.stop_at_step=13 || bad "4-rank run to step 13 failed"
run 4 sr --set comm.allreduce=hier_rs --set comm.ranks_per_node=2 --set train.stop_at_step=13 --resume auto || bad "4-rank resume failed: $(tail -3 "$work/sr.log")"
cmp -s "$work/np4-hier_rs/final.safetensors" "$work/sr/final.safetensors" && ok || bad "stop + resume on 4 ranks is not bit-exact"

# Distributed K-FAC against one process, and a stop + resume with sharded K-FAC state.
K=(--set kfac.enabled=true --set kfac.factor_every=1 --set kfac.inv_every=5 --set kfac.damping=0.03 --set optimizer.lr=0.01)
"$ng" train --config "$work/dp.yaml" --out "$work/k1" "${K[@]}" >"$work/k1.log" 2>&1 || bad "one-rank K-FAC failed"
for f in 1 0.5 0.25; do
  run 4 "k4-$f" "${K[@]}" --set kfac.grad_worker_fraction=$f || bad "4-rank K-FAC ($f) failed: $(tail -3 "$work/k4-$f.log")"
  close_to k1 "k4-$f" 1e-5 "K-FAC on 4 ranks, grad_worker_fraction $f"
done
ls "$work/k4-0.25/checkpoints/step-00000026/kfac.rank3-of-4.safetensors" >/dev/null 2>&1 && ok || bad "no K-FAC shard of rank 3"
run 4 ks "${K[@]}" --set kfac.grad_worker_fraction=0.25 --set train.stop_at_step=13 || bad "sharded K-FAC to step 13 failed"
run 4 ks "${K[@]}" --set kfac.grad_worker_fraction=0.25 --set train.stop_at_step=13 --resume auto || bad "sharded K-FAC resume failed: $(tail -3 "$work/ks.log")"
cmp -s "$work/k4-0.25/final.safetensors" "$work/ks/final.safetensors" && ok || bad "sharded K-FAC stop + resume is not bit-exact"
cp -r "$work/ks" "$work/ks2" && rm -f "$work/ks2/result.json" "$work/ks2/final.safetensors"
rm -rf "$work/ks2/checkpoints/step-00000026"
run 2 ks2 "${K[@]}" --set kfac.grad_worker_fraction=0.5 --resume auto --allow-config-change
rc=$?
[ $rc -ne 0 ] && grep -q "no K-FAC shard for rank" "$work/ks2.log" && ok || bad "a sharded checkpoint resumed on another world size: exit $rc"

# A non-finite gradient at step 7 on every rank: all skip it together and go on.
NG_TEST_NONFINITE_STEP=7 run 2 nan --set comm.allreduce=ring || bad "run with one non-finite step failed: $(tail -3 "$work/nan.log")"
grep -q '"step": 7,.*"skipped": 1,' "$work/nan/metrics.jsonl" && ok || bad "step 7 not logged as skipped"
[ "$(grep -c '"skipped": 1,' "$work/nan/metrics.jsonl")" = 1 ] && ok || bad "more than one step skipped"

# SIGKILL of one rank mid-run: the job ends within seconds, the last complete checkpoint resumes.
# (Steps of a few ms, so that a signal lands mid-run.)
cat >"$work/long.yaml" <<'YAML'
seed: 4
model: {arch: mlp, width: 1024, depth: 2}
data: {name: synthetic, synthetic: {train: 2000, test: 200, noise: 3.0}}
train: {batch_size: 40, steps: 800, log_every: 1, checkpoint_every: 20, eval_every: 800}
optimizer: {name: sgd, lr: 0.01}
YAML
# SIGTERM to mpirun: it reaches every rank, all stop after the same step with one checkpoint,
# and --resume auto ends with the bits of a run never stopped.
timeout 300 "$mpirun" --oversubscribe -np 2 "$ng" train --config "$work/long.yaml" --out "$work/whole" >"$work/whole.log" 2>&1 || bad "uninterrupted 2-rank run failed"
timeout 120 "$mpirun" --oversubscribe -np 2 "$ng" train --config "$work/long.yaml" --out "$work/term" >"$work/term.log" 2>&1 &
pid=$!
pids+=("$pid")
wait_for "$pid" has_lines "$work/term" 30 || bad "the run to be stopped logged nothing"
kill -TERM "$(pgrep -P "$pid" | head -1)" # mpirun itself (timeout would signal its whole group)
wait "$pid"
grep -q "stopped by SIGTERM after step" "$work/term.log" && ok || bad "SIGTERM under mpirun: no stop message: $(tail -3 "$work/term.log")"
timeout 300 "$mpirun" --oversubscribe -np 2 "$ng" train --config "$work/long.yaml" --out "$work/term" --resume auto >"$work/term2.log" 2>&1 || bad "resume after SIGTERM failed"
cmp -s "$work/whole/final.safetensors" "$work/term/final.safetensors" && ok || bad "SIGTERM + resume on 2 ranks is not bit-exact"
timeout 120 "$mpirun" --oversubscribe -np 2 "$ng" train --config "$work/long.yaml" --out "$work/kill" >"$work/kill.log" 2>&1 &
pid=$!
pids+=("$pid")
wait_for "$pid" test -e "$work/kill/checkpoints/step-00000040/COMPLETE" || bad "no checkpoint before the kill"
victim=$(pgrep -f "natgrad train --config $work/long.yaml" | tail -1)
start=$(date +%s)
[ -n "$victim" ] && kill -KILL "$victim"
wait "$pid"
rc=$?
took=$(($(date +%s) - start))
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le 20 ] && ok || bad "after SIGKILL of a rank: exit $rc after ${took} s"
timeout 300 "$mpirun" --oversubscribe -np 2 "$ng" train --config "$work/long.yaml" --out "$work/kill" --resume auto >"$work/kill2.log" 2>&1 || bad "resume after the kill failed: $(tail -3 "$work/kill2.log")"
grep -q "^test accuracy" "$work/kill2.log" && grep -q "resumed from" "$work/kill2.log" && ok || bad "the resumed run did not finish from a checkpoint"
report train_mpi
