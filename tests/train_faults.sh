#!/usr/bin/env bash
# What natgrad train does with bad numbers and bad checkpoints: a step with a non-finite gradient
# is skipped with weights, optimizer state and K-FAC factors untouched and counted in the metrics;
# train.max_skips skips in a row stop the run (exit 1) naming the step and the parameter or the
# loss; metrics stay valid JSON; no checkpoint over non-finite weights is complete; a checkpoint
# whose metadata lies (step, train_s, optimizer_step, loader index) is refused with exit 2.
# usage: train_faults.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"
have_py=0
command -v python3 >/dev/null && have_py=1

small_yaml
# Every line of FILE is a JSON object (python3 when present; else no nan/inf tokens and a final
# newline).
valid_jsonl() {
  if [ $have_py = 1 ]; then
    python3 -c 'import json,sys
for l in open(sys.argv[1]): json.loads(l, parse_constant=lambda c: sys.exit("non-JSON " + c))' "$1"
  else
    ! grep -qiE 'nan|inf' "$1" && [ "$(tail -c1 "$1" | od -An -c | tr -d ' ')" = '\n' ]
  fi
}
# The tensor bytes of a safetensors file (after its header, which holds the step).
tensor_bytes() { tail -c +$((9 + $(od -An -tu8 -N8 "$1"))) "$1"; }

# Divergence: an absurd learning rate. Skips, then exit 1 naming the step and what was non-finite.
out=$("$ng" train --config "$work/small.yaml" --out "$work/d" --set optimizer.lr=1e6 2>&1)
st=$?
[ $st -eq 1 ] && grep -q "training diverged: 10 steps in a row .*train.max_skips = 10.*the last at step [0-9]*: non-finite loss" <<<"$out" &&
  ok || bad "divergence: status $st, want 1 and a message naming the step: $(tail -2 <<<"$out")"
[ ! -e "$work/d/final.safetensors" ] && ok || bad "a diverged run wrote final.safetensors"
valid_jsonl "$work/d/metrics.jsonl" && ok || bad "metrics of a diverged run are not valid JSON"
grep -q '"loss": null' "$work/d/metrics.jsonl" && tail -1 "$work/d/metrics.jsonl" | grep -q '"skipped_total": [1-9]' &&
  ok || bad "metrics should hold null losses and count the skips: $(tail -1 "$work/d/metrics.jsonl")"
if [ $have_py = 1 ]; then
  python3 - "$work/d/checkpoints" <<'PY' && ok || bad "a complete checkpoint holds non-finite weights"
import array, glob, math, os, struct, sys
for d in glob.glob(sys.argv[1] + "/step-*"):
    if not os.path.exists(d + "/COMPLETE"): continue
    f = open(d + "/model.safetensors", "rb"); n = struct.unpack("<Q", f.read(8))[0]; f.read(n)
    a = array.array("f"); a.frombytes(f.read())
    if not all(math.isfinite(x) for x in a): sys.exit(d)
PY
fi

# One poisoned step (a test hook fills head.bias's gradient with NaN at step 5), checkpoints every
# step, K-FAC factors every step: step 5 changes no weight, optimizer state or factor.
kf=(--set kfac.enabled=true --set kfac.factor_every=1 --set kfac.inv_every=1 --set train.checkpoint_every=1
  --set train.keep_checkpoints=100)
out=$(NG_TEST_NONFINITE_STEP=5 "$ng" train --config "$work/small.yaml" --out "$work/p" "${kf[@]}" 2>&1) ||
  bad "a run with one skipped step failed: $out"
grep -q "step 5 skipped: non-finite gradient of head.bias" <<<"$out" && ok || bad "the skip is not reported: $out"
c4=$work/p/checkpoints/step-00000004 c5=$work/p/checkpoints/step-00000005 c6=$work/p/checkpoints/step-00000006
cmp -s "$c4/kfac.safetensors" "$c5/kfac.safetensors" && cmp -s "$c4/optimizer.safetensors" "$c5/optimizer.safetensors" &&
  cmp -s <(tensor_bytes "$c4/model.safetensors") <(tensor_bytes "$c5/model.safetensors") && ok ||
  bad "the skipped step 5 changed weights, optimizer state or K-FAC factors"
if ! cmp -s "$c5/kfac.safetensors" "$c6/kfac.safetensors" &&
  ! cmp -s <(tensor_bytes "$c5/model.safetensors") <(tensor_bytes "$c6/model.safetensors"); then ok; else
  bad "step 6 should train again"
fi
l5=$(grep '"step": 5,' "$work/p/metrics.jsonl") l6=$(grep '"step": 6,' "$work/p/metrics.jsonl")
grep -q '"grad_norm": null.*"skipped": 1, "skipped_total": 1' <<<"$l5" &&
  grep -q '"skipped": 0, "skipped_total": 1' <<<"$l6" && ok || bad "metrics of steps 5, 6: $l5 / $l6"
valid_jsonl "$work/p/metrics.jsonl" && ok || bad "metrics with a skipped step are not valid JSON"
# Batch-norm running statistics move in the forward of a skipped step and are put back.
NG_TEST_NONFINITE_STEP=3 "$ng" train --config "$work/small.yaml" --out "$work/bn" --set model.arch=vgg \
  --set model.width=4 --set train.steps=6 --set train.checkpoint_every=1 --set train.keep_checkpoints=6 >/dev/null 2>&1 || bad "vgg run failed"
cmp -s <(tensor_bytes "$work/bn/checkpoints/step-00000002/model.safetensors") \
  <(tensor_bytes "$work/bn/checkpoints/step-00000003/model.safetensors") && ok ||
  bad "a skipped step changed the batch-norm running statistics"
out=$(NG_TEST_NONFINITE_STEP=5 "$ng" train --config "$work/small.yaml" --out "$work/p1" "${kf[@]}" \
  --set train.max_skips=1 2>&1)
st=$?
[ $st -eq 1 ] && grep -q "the last at step 5: non-finite gradient of head.bias" <<<"$out" &&
  [ ! -e "$work/p1/checkpoints/step-00000005" ] && ok ||
  bad "train.max_skips=1: status $st, want 1 naming step 5 and head.bias, no checkpoint 5: $(tail -1 <<<"$out")"

# Checkpoints whose metadata disagrees with itself: exit 2 naming the file and the key.
"$ng" train --config "$work/small.yaml" --out "$work/c" --set train.stop_at_step=20 >/dev/null 2>&1
resume_bad() { # NEEDLE: resume from c2 (a doctored copy of c) must fail naming NEEDLE
  out=$("$ng" train --config "$work/small.yaml" --out "$work/c2" --resume auto 2>&1)
  local st=$?
  [ $st -eq 2 ] && grep -q -- "$1" <<<"$out" && ok || bad "doctored checkpoint: status $st, want 2 naming '$1': $out"
}
fresh() { rm -rf "$work/c2" && cp -r "$work/c" "$work/c2" && rm -f "$work/c2/.lock"; }
fresh
mv "$work/c2/checkpoints/step-00000020" "$work/c2/checkpoints/step-00000030"
resume_bad "step-00000030/model.safetensors: metadata 'step' is 20 but the folder is step 30"
if [ $have_py = 1 ]; then
  # Rewrites one metadata value of a safetensors file (header length adjusted, data unchanged).
  set_meta() { # FILE KEY VALUE
    python3 - "$@" <<'PY'
import json, struct, sys
path, key, value = sys.argv[1:]
raw = open(path, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); h["__metadata__"][key] = value
t = json.dumps(h).encode(); t += b" " * (-len(t) % 8)
open(path, "wb").write(struct.pack("<Q", len(t)) + t + raw[8 + n:])
PY
  }
  ck=$work/c2/checkpoints/step-00000020
  fresh && set_meta "$ck/model.safetensors" train_s nan
  resume_bad "model.safetensors: metadata 'train_s' is 'nan', not a finite number"
  fresh && set_meta "$ck/model.safetensors" train_s -1
  resume_bad "metadata 'train_s' is '-1'"
  fresh && set_meta "$ck/optimizer.safetensors" optimizer_step 21
  resume_bad "optimizer.safetensors: metadata 'optimizer_step' 21 is not the checkpoint's step 20 less its 0 skipped"
  fresh && set_meta "$ck/model.safetensors" skipped 21
  resume_bad "model.safetensors: metadata 'skipped' 21 / 'skip_streak' 0 do not fit step 20"
  fresh && set_meta "$ck/model.safetensors" index 12
  resume_bad "metadata 'index' 12 is beyond the 12 batches of an epoch"
  fresh && set_meta "$ck/model.safetensors" epoch x
  resume_bad "model.safetensors: metadata 'epoch' is missing or not a count"
  fresh && set_meta "$ck/model.safetensors" epoch 21
  resume_bad "model.safetensors: metadata 'epoch' 21 is beyond step 20"
fi

report train_faults
