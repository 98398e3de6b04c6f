#!/usr/bin/env bash
# A briefly full disk under a run (a small tmpfs filled by a file, then emptied): the metrics lines
# that could not be written are retried and all arrive, in order, whole, with the same losses as a
# run on a roomy disk; a disk that stays full stops the run (exit 1) naming metrics.jsonl, and the
# file still ends with a whole line. Needs root for mount; exits 77 (skipped) without it.
# usage: train_full_disk.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"
mnt=$work/mnt
mkdir -p "$mnt"
if ! mount -t tmpfs -o size=24m none "$mnt" 2>/dev/null; then
  echo "train_full_disk: cannot mount a tmpfs here (needs root); skipped"
  exit 77
fi
at_exit+=("umount '$mnt'")

# Steps of a few ms, about 5 s in all so that the disk fills mid-run even on a quiet machine;
# checkpoints only at the end (they need room: the test is about metrics).
cat >"$work/run.yaml" <<'YAML'
seed: 7
model: {arch: mlp, width: 256, depth: 2}
data:
  name: synthetic
  synthetic: {train: 1000, test: 200, noise: 3.0}
train: {batch_size: 50, steps: 1500, log_every: 1, checkpoint_every: 1500, eval_every: 1500, keep_checkpoints: 1}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
schedule: {name: constant}
YAML
fill() { dd if=/dev/zero of="$mnt/fill" bs=64k >/dev/null 2>&1; } # until the disk is full

"$ng" train --config "$work/run.yaml" --out "$work/ref" >/dev/null 2>&1 || bad "reference run failed"

# Full for a moment, then room again.
"$ng" train --config "$work/run.yaml" --out "$mnt/a" >/dev/null 2>"$work/a.err" &
pid=$!
pids+=("$pid")
if wait_for "$pid" has_lines "$mnt/a" 20; then
  fill
  wait_for "$pid" grep -q "warning: cannot write $mnt/a/metrics.jsonl" "$work/a.err" ||
    bad "no warning about the full disk: $(tail -2 "$work/a.err")"
  sleep 0.3
  rm -f "$mnt/fill"
  wait "$pid"
  st=$?
  [ $st -eq 0 ] && grep -q "metrics.jsonl: written again after [0-9]* failed attempts" "$work/a.err" && ok ||
    bad "briefly full disk: status $st, want 0 and a recovery note: $(tail -3 "$work/a.err")"
  [ "$(losses "$work/ref")" = "$(losses "$mnt/a")" ] && [ "$(losses "$mnt/a" | wc -l)" -eq 1500 ] && ok ||
    bad "after a briefly full disk the metrics differ from the reference run (lines lost or torn)"
  cmp -s "$work/ref/final.safetensors" "$mnt/a/final.safetensors" && ok || bad "final weights differ"
else
  bad "run a ended or stalled before 20 metrics lines"
fi
rm -rf "$mnt/a"

# Full for good: the run stops, and the metrics file ends with a whole line. It stops once the
# writes have failed NG_METRICS_MAX_FAILURES times over NG_METRICS_MAX_FAIL_S seconds (5 s), so
# this run is long enough, with nothing else to write before then.
"$ng" train --config "$work/run.yaml" --out "$mnt/b" --set train.steps=100000 \
  --set train.checkpoint_every=100000 --set train.eval_every=100000 >/dev/null 2>"$work/b.err" &
pid=$!
pids+=("$pid")
if wait_for "$pid" has_lines "$mnt/b" 20; then
  fill
  wait "$pid"
  st=$?
  [ $st -eq 1 ] && grep -q "error: cannot write $mnt/b/metrics.jsonl: No space left on device" "$work/b.err" && ok ||
    bad "disk full for good: status $st, want 1 naming metrics.jsonl: $(tail -2 "$work/b.err")"
  [ "$(tail -c1 "$mnt/b/metrics.jsonl" | od -An -tx1 | tr -d ' ')" = 0a ] &&
    [ "$(losses "$mnt/b")" = "$(losses "$work/ref" | head -n "$(lines "$mnt/b")")" ] && ok ||
    bad "the metrics of a stopped run are not a whole-line prefix of the reference run's"
else
  bad "run b ended or stalled before 20 metrics lines"
fi

report train_full_disk
