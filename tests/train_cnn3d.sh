#!/usr/bin/env bash
# natgrad train on 3D volumes: the 3D-CNN on synthetic [C,D,D,D] volumes (data.name synthetic3d)
# learns (the loss falls, test accuracy well above chance), a run stopped mid-epoch and resumed
# equals one never stopped bit for bit (weights and logged losses, volume augmentation on), K-FAC
# preconditions its Conv3d layers and resumes exactly too, the README's experiment config loads,
# and bad data keys exit 2 naming the key before a run directory exists.
# usage: train_cnn3d.sh PATH/TO/natgrad SOURCE_DIR
set -u
ng=$1 src=$2
source "$(dirname "$0")/train_lib.sh"

# 12 batches per epoch, 3 epochs; about 3 s.
cat >"$work/vol.yaml" <<'YAML'
seed: 3
model: {arch: cnn3d, width: 8, depth: 3}
data:
  name: synthetic3d
  synthetic: {train: 192, test: 64, side: 10, channels: 2, noise: 0.3}
  augment: {crop_pad: 1, hflip: true}
  prefetch: 2
train: {batch_size: 16, steps: 36, log_every: 1, checkpoint_every: 12, eval_every: 18}
optimizer: {name: adamw, lr: 0.003}
schedule: {name: constant}
YAML

out=$("$ng" train --config "$work/vol.yaml" --out "$work/a" 2>&1) || bad "cnn3d run failed: $(tail -3 <<<"$out")"
grep -q "cnn3d" <<<"$out" && grep -q "synthetic 2 x 10^3 volumes, 2 classes" <<<"$out" && ok ||
  bad "the run should say it trains cnn3d on 2 x 10^3 volumes: $(head -2 <<<"$out")"
# The loss falls: the mean of the last 6 steps is below 80% of the first 6 and well below ln 2.
read -r first last < <(losses "$work/a" | awk '{ l[NR] = $2 } END {
  for (i = 1; i <= 6; i++) { f += l[i]; t += l[NR - 6 + i] } print f / 6, t / 6 }')
awk -v f="$first" -v t="$last" 'BEGIN { exit !(t < 0.8 * f && t < 0.6) }' && ok ||
  bad "cnn3d loss did not fall: first 6 steps $first, last 6 $last"
acc=$(sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p' "$work/a/result.json" 2>/dev/null)
awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.7) }' && ok ||
  bad "cnn3d test accuracy ${acc:-none} after 36 steps, want >= 0.7 (chance 0.5)"

# Stop at 17 (mid-epoch), resume, finish: the same bits as the straight run.
"$ng" train --config "$work/vol.yaml" --out "$work/b" --set train.stop_at_step=17 >/dev/null 2>&1 ||
  bad "stopped cnn3d run failed"
[ -f "$work/b/checkpoints/step-00000017/COMPLETE" ] && ok || bad "no checkpoint at step 17"
out=$("$ng" train --config "$work/vol.yaml" --out "$work/b" --resume auto 2>&1) || bad "cnn3d resume failed: $out"
grep -q "resumed from .*step-00000017" <<<"$out" && ok || bad "resume should take step 17: $out"
cmp -s "$work/a/final.safetensors" "$work/b/final.safetensors" && ok || bad "resumed cnn3d weights differ"
[ "$(losses "$work/a")" = "$(losses "$work/b")" ] && [ "$(losses "$work/a" | wc -l)" -eq 36 ] && ok ||
  bad "resumed cnn3d losses differ"
"$ng" train --config "$work/vol.yaml" --out "$work/s" --set seed=4 --set train.steps=12 >/dev/null 2>&1
[ "$(losses "$work/a" | head -12)" != "$(losses "$work/s")" ] && ok || bad "another seed, same losses"

# K-FAC on the Conv3d layers (SGD), stopped and resumed across an inverse step.
kf=(--set kfac.enabled=true --set optimizer.name=sgd --set optimizer.lr=0.02 --set kfac.factor_every=2
  --set kfac.inv_every=3 --set kfac.damping=0.03 --set train.steps=20)
"$ng" train --config "$work/vol.yaml" --out "$work/k1" "${kf[@]}" >/dev/null 2>&1 || bad "cnn3d kfac run failed"
"$ng" train --config "$work/vol.yaml" --out "$work/k2" "${kf[@]}" --set train.stop_at_step=10 >/dev/null 2>&1
"$ng" train --config "$work/vol.yaml" --out "$work/k2" "${kf[@]}" --resume auto >/dev/null 2>&1 ||
  bad "cnn3d kfac resume failed"
cmp -s "$work/k1/final.safetensors" "$work/k2/final.safetensors" && ok || bad "cnn3d kfac resumed weights differ"
[ -f "$work/k1/checkpoints/step-00000020/kfac.safetensors" ] && ok || bad "cnn3d kfac state not checkpointed"

# The experiment config of the README, for two steps.
exp="$src/experiments/configs/cnn3d_synthetic.yaml"
"$ng" train --config "$exp" --out "$work/e" --set train.steps=2 --set data.synthetic.train=64 \
  --set data.synthetic.test=16 --set train.eval_every=2 --set schedule.warmup_steps=0 >/dev/null 2>&1 && [ -f "$work/e/result.json" ] && ok ||
  bad "$exp does not train"

expect_bad() { expect_bad_train "$work/vol.yaml" "$@"; } # NEEDLE ARGS...
expect_bad "data.synthetic.classes" --set data.synthetic.classes=14
expect_bad "data.synthetic.classes" --set data.synthetic.classes=1
expect_bad "data.synthetic.side" --set data.synthetic.side=1
expect_bad "data.synthetic.side" --set data.synthetic.side=5000
expect_bad "data.synthetic.channels" --set data.synthetic.channels=-1
expect_bad "data.synthetic.noise" --set data.synthetic.noise=-0.5
expect_bad "data.augment.crop_pad" --set data.augment.crop_pad=10
expect_bad "data.name" --set data.name=volumes
expect_bad "data.name: synthetic3d" --set model.arch=mlp
expect_bad "model.arch: cnn3d" --set data.name=synthetic
expect_bad "too large" --set data.synthetic.side=4096 --set data.synthetic.channels=1024

report train_cnn3d
