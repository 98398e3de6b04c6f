#!/usr/bin/env bash
# Preemption and run-directory ownership, end to end: SIGTERM stops a run after its step with a
# checkpoint and exit 143, and --resume auto then ends bit-identical to a run never stopped (also
# after two signals in a row); a second process on a live run directory is refused (exit 2, naming
# the holder's pid); a resume whose config changes the run is refused naming each key, or, with
# --allow-config-change, recorded in config.yaml's history; a finished run reports its result.
# usage: train_preempt.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"

# Steps of a few ms and enough of them (about 8 s) that a signal lands mid-run even on a quiet machine.
cat >"$work/slow.yaml" <<'YAML'
seed: 5
model: {arch: mlp, width: 512, depth: 2, dropout: 0.1}
data:
  name: synthetic
  synthetic: {train: 1000, test: 200, noise: 3.0}
  augment: {crop_pad: 1}
train: {batch_size: 50, steps: 1500, log_every: 1, checkpoint_every: 500, eval_every: 500}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
schedule: {name: cosine, warmup_steps: 5}
YAML

out=$("$ng" train --config "$work/slow.yaml" --out "$work/ref" 2>&1) || bad "reference run failed: $out"
ref_line=$(grep "^test accuracy" <<<"$out")

# SIGTERM mid-run, while a second process tries the same directory.
"$ng" train --config "$work/slow.yaml" --out "$work/p" 2>"$work/p.err" >/dev/null &
pid=$!
pids+=("$pid")
if wait_for "$pid" has_lines "$work/p" 20; then
  out=$("$ng" train --config "$work/slow.yaml" --out "$work/p" --resume auto 2>&1)
  [ $? -eq 2 ] && grep -q "$work/p is in use" <<<"$out" && grep -q "pid $pid" <<<"$out" && ok ||
    bad "a second process on a live run directory: $out"
  kill -TERM "$pid"
  wait "$pid"
  st=$?
  [ $st -eq 143 ] && ok || bad "SIGTERM: exit status $st, want 143"
  msg=$(grep "stopped by SIGTERM" "$work/p.err")
  n=$(sed -n 's/.*stopped by SIGTERM after step \([0-9]*\);.*/\1/p' <<<"$msg")
  if [ -n "$n" ] && [ "$n" -lt 1500 ]; then
    ck=$(printf '%s/p/checkpoints/step-%08d' "$work" "$n")
    grep -q "checkpoint in $ck" <<<"$msg" && [ -f "$ck/COMPLETE" ] && [ ! -e "$work/p/final.safetensors" ] &&
      ok || bad "SIGTERM should leave a complete checkpoint at step $n and say so: $msg"
  else
    bad "SIGTERM: no 'stopped by SIGTERM after step N' message: $(tail -3 "$work/p.err")"
  fi
else
  bad "run p ended or stalled before 20 metrics lines"
fi

# A resume that changes the run is refused naming the key; one with only free keys changed is not.
out=$("$ng" train --config "$work/slow.yaml" --out "$work/p" --resume auto --set optimizer.lr=0.1 \
  --set seed=6 2>&1)
[ $? -eq 2 ] && grep -q "optimizer.lr: 0.05 -> 0.1" <<<"$out" && grep -q "seed: 5 -> 6" <<<"$out" && ok ||
  bad "a resume with another lr and seed must be refused naming both: $out"
out=$("$ng" train --config "$work/slow.yaml" --out "$work/p" --resume auto --set train.keep_checkpoints=3 2>&1) ||
  bad "resume after SIGTERM failed: $out"
cmp -s "$work/ref/final.safetensors" "$work/p/final.safetensors" && ok || bad "resumed after SIGTERM: weights differ"
[ "$(losses "$work/ref")" = "$(losses "$work/p")" ] && ok || bad "resumed after SIGTERM: logged losses differ"

# Two signals in a row end the process at once; whatever it left, resume gets the same bits.
"$ng" train --config "$work/slow.yaml" --out "$work/q" >/dev/null 2>&1 &
pid=$!
pids+=("$pid")
if wait_for "$pid" has_lines "$work/q" 20; then
  kill -INT "$pid"
  sleep 0.001
  kill -INT "$pid"
  wait "$pid"
  st=$?
  [ $st -eq 130 ] && ok || bad "two SIGINTs: exit status $st, want 130"
  "$ng" train --config "$work/slow.yaml" --out "$work/q" --resume auto >/dev/null 2>&1 || bad "resume after two SIGINTs failed"
  cmp -s "$work/ref/final.safetensors" "$work/q/final.safetensors" && ok || bad "resumed after two SIGINTs: weights differ"
else
  bad "run q ended or stalled before 20 metrics lines"
fi

# A finished run: --resume auto reports the recorded result and trains nothing.
out=$("$ng" train --config "$work/slow.yaml" --out "$work/ref" --resume auto 2>&1)
st=$?
acc=$(sed 's/^test accuracy \([0-9.]*%\).*/\1/' <<<"$ref_line")
[ $st -eq 0 ] && grep -q "already complete: test accuracy $acc" <<<"$out" && ok ||
  bad "resume of a finished run (want 'already complete: test accuracy $acc'): $out"

# --allow-config-change: accepted, recorded in config.yaml's history, which stays a loadable config.
"$ng" train --config "$work/slow.yaml" --out "$work/h" --set train.stop_at_step=10 >/dev/null 2>&1
"$ng" train --config "$work/slow.yaml" --out "$work/h" --resume auto --allow-config-change \
  --set optimizer.lr=0.1 --set train.stop_at_step=20 >/dev/null 2>&1 || bad "an allowed config change failed"
"$ng" train --config "$work/slow.yaml" --out "$work/h" --resume auto --allow-config-change \
  --set optimizer.lr=0.2 --set train.stop_at_step=30 >/dev/null 2>&1 || bad "a second allowed config change failed"
grep -q "^# history: step 10: optimizer.lr: 0.05 -> 0.1" "$work/h/config.yaml" &&
  grep -q "^# history: step 20: optimizer.lr: 0.1 -> 0.2" "$work/h/config.yaml" && ok ||
  bad "config.yaml should keep both changes in its history: $(grep history "$work/h/config.yaml")"
"$ng" eval --config "$work/h/config.yaml" --weights "$work/h/checkpoints/step-00000030/model.safetensors" \
  >/dev/null 2>&1 && ok || bad "config.yaml with a history is not a loadable config"
out=$("$ng" train --config "$work/slow.yaml" --out "$work/h" --allow-config-change 2>&1)
[ $? -eq 2 ] && grep -q "only with --resume" <<<"$out" && ok || bad "--allow-config-change without --resume: $out"

report train_preempt
