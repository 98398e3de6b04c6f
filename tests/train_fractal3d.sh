#!/usr/bin/env bash
# natgrad train on FractalDB 3D voxel volumes (data.name fractal3d): the 3D-CNN learns (the loss
# falls, test accuracy well above chance on instances it never saw), a run stopped mid-epoch and
# resumed equals one never stopped bit for bit, the experiment config loads and takes steps, and
# bad data.fractal3d keys exit 2 naming the key before a run directory exists.
# usage: train_fractal3d.sh PATH/TO/natgrad SOURCE_DIR
set -u
ng=$1 src=$2
source "$(dirname "$0")/train_lib.sh"

# 4 categories x 24 instances of 12^3 voxels; 6 batches per epoch, 6 epochs; about 10 s.
cat >"$work/f3.yaml" <<'YAML'
seed: 3
model: {arch: cnn3d, width: 8, depth: 3}
data:
  name: fractal3d
  fractal3d: {categories: 4, instances: 24, test_instances: 6, side: 12, points: 4000}
  augment: {crop_pad: 1}
  prefetch: 2
train: {batch_size: 16, steps: 36, log_every: 1, checkpoint_every: 12, eval_every: 18}
optimizer: {name: adamw, lr: 0.003}
schedule: {name: constant}
YAML

out=$("$ng" train --config "$work/f3.yaml" --out "$work/a" 2>&1) || bad "fractal3d run failed: $(tail -3 <<<"$out")"
grep -q "cnn3d" <<<"$out" &&
  grep -q "FractalDB 3D 4 categories x 24+6 instances, 12^3 voxels, 4000 points" <<<"$out" && ok ||
  bad "the run should say it trains cnn3d on fractal3d volumes: $(head -3 <<<"$out")"
read -r first last < <(losses "$work/a" | awk '{ l[NR] = $2 } END {
  for (i = 1; i <= 6; i++) { f += l[i]; t += l[NR - 6 + i] } print f / 6, t / 6 }')
awk -v f="$first" -v t="$last" 'BEGIN { exit !(t < 0.85 * f) }' && ok ||
  bad "fractal3d loss did not fall: first 6 steps $first, last 6 $last"
acc=$(sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p' "$work/a/result.json" 2>/dev/null)
awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.4) }' && ok ||
  bad "fractal3d test accuracy ${acc:-none} after 36 steps, want >= 0.4 (chance 0.25)"

# Stop mid-epoch, resume: the same bits (every volume is a function of seed, category, instance).
"$ng" train --config "$work/f3.yaml" --out "$work/b" --set train.stop_at_step=17 >/dev/null 2>&1 ||
  bad "stopped fractal3d run failed"
out=$("$ng" train --config "$work/f3.yaml" --out "$work/b" --resume auto 2>&1) || bad "fractal3d resume failed: $out"
grep -q "resumed from .*step-00000017" <<<"$out" && ok || bad "resume should take step 17: $out"
cmp -s "$work/a/final.safetensors" "$work/b/final.safetensors" && ok || bad "resumed fractal3d weights differ"
[ "$(losses "$work/a")" = "$(losses "$work/b")" ] && [ "$(losses "$work/a" | wc -l)" -eq 36 ] && ok ||
  bad "resumed fractal3d losses differ"

# The experiment config, for two steps on fewer instances.
exp="$src/experiments/configs/cnn3d_fractal3d.yaml"
"$ng" train --config "$exp" --out "$work/e" --set train.steps=2 --set data.fractal3d.instances=2 \
  --set data.fractal3d.test_instances=1 --set train.batch_size=8 --set train.eval_every=2 \
  --set schedule.warmup_steps=0 >/dev/null 2>&1 && [ -f "$work/e/result.json" ] && ok ||
  bad "$exp does not train"

# Instance augmentations chosen in the config: both off trains and says so; both set true are
# the defaults (the same shard bytes), weight variation off gives other volumes.
out=$("$ng" train --config "$work/f3.yaml" --out "$work/w" --set data.fractal3d.weight_variation=false \
  --set data.fractal3d.flip=false --set train.steps=2 --set train.eval_every=2 2>&1) &&
  grep -q "4000 points, no weight variation or flips" <<<"$out" && [ -f "$work/w/result.json" ] && ok ||
  bad "a fractal3d run without weight variation and flips failed: $(head -3 <<<"$out")"
# Fewer instances than a batch: natgrad shards does not apply the trainer's checks.
few=(--set data.fractal3d.instances=3 --set data.fractal3d.test_instances=1)
shards_of "$work/f3.yaml" default "${few[@]}"
shards_of "$work/f3.yaml" on "${few[@]}" --set data.fractal3d.weight_variation=true --set data.fractal3d.flip=yes
shards_of "$work/f3.yaml" fixed "${few[@]}" --set data.fractal3d.weight_variation=false
cmp -s "$work/s_default/train-000000.tar" "$work/s_on/train-000000.tar" &&
  ! cmp -s "$work/s_default/train-000000.tar" "$work/s_fixed/train-000000.tar" && ok ||
  bad "data.fractal3d.weight_variation and flip true should give the default volumes, weight_variation false others"

expect_bad() { expect_bad_train "$work/f3.yaml" "$@"; } # NEEDLE ARGS...
expect_bad "data.fractal3d.categories" --set data.fractal3d.categories=1
expect_bad "data.fractal3d.instances" --set data.fractal3d.instances=0
expect_bad "data.fractal3d.test_instances" --set data.fractal3d.test_instances=0
expect_bad "data.fractal3d.side" --set data.fractal3d.side=3
expect_bad "data.fractal3d.side" --set data.fractal3d.side=2000
expect_bad "data.fractal3d.points" --set data.fractal3d.points=5
expect_bad "data.fractal3d.threshold" --set data.fractal3d.threshold=1.5
expect_bad "data.fractal3d.threshold" --set data.fractal3d.threshold=0
expect_bad "data.fractal3d" --set data.fractal3d.colour=1
expect_bad "data.fractal3d.flip" --set data.fractal3d.flip=maybe
expect_bad "data.fractal3d.weight_variation" --set data.fractal3d.weight_variation=sometimes
expect_bad "data.name: fractal3d" --set model.arch=mlp
expect_bad "model.arch: cnn3d" --set data.name=fractal

report train_fractal3d
