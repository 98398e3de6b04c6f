#!/usr/bin/env bash
# natgrad train on FractalDB 2D rendered on the fly (data.name fractal): a small MLP learns (the
# loss falls, test accuracy well above chance on instances it never saw), a run stopped and
# resumed equals one never stopped, the experiment config loads and takes a step, and bad
# data.fractal keys exit 2 naming the key before a run directory exists.
# usage: train_fractal.sh PATH/TO/natgrad SOURCE_DIR
set -u
ng=$1 src=$2
source "$(dirname "$0")/train_lib.sh"

# 8 categories x 40 instances at 16 px; 10 batches per epoch, 6 epochs; a few seconds.
cat >"$work/fr.yaml" <<'YAML'
seed: 5
model: {arch: mlp, width: 128, depth: 1}
data:
  name: fractal
  fractal: {categories: 8, instances: 40, test_instances: 8, side: 16, points: 800}
  prefetch: 2
train: {batch_size: 32, steps: 60, log_every: 1, checkpoint_every: 20, eval_every: 30}
optimizer: {name: adamw, lr: 0.003}
schedule: {name: constant}
YAML

out=$("$ng" train --config "$work/fr.yaml" --out "$work/a" 2>&1) || bad "fractal run failed: $(tail -3 <<<"$out")"
grep -q "FractalDB 8 categories x 40+8 instances, 16 px, 800 points" <<<"$out" && ok ||
  bad "the run should describe its fractal data: $(head -3 <<<"$out")"
read -r first last < <(losses "$work/a" | awk '{ l[NR] = $2 } END {
  for (i = 1; i <= 6; i++) { f += l[i]; t += l[NR - 6 + i] } print f / 6, t / 6 }')
awk -v f="$first" -v t="$last" 'BEGIN { exit !(t < 0.7 * f) }' && ok ||
  bad "fractal loss did not fall: first 6 steps $first, last 6 $last"
acc=$(sed -n 's/.*"test_accuracy": \([0-9.]*\).*/\1/p' "$work/a/result.json" 2>/dev/null)
awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 0.4) }' && ok ||
  bad "fractal test accuracy ${acc:-none} after 60 steps, want >= 0.4 (chance 0.125)"

# Stop mid-epoch, resume: the same bits (every image is a function of seed, category, instance).
"$ng" train --config "$work/fr.yaml" --out "$work/b" --set train.stop_at_step=25 >/dev/null 2>&1 ||
  bad "stopped fractal run failed"
"$ng" train --config "$work/fr.yaml" --out "$work/b" --resume auto >/dev/null 2>&1 || bad "fractal resume failed"
cmp -s "$work/a/final.safetensors" "$work/b/final.safetensors" && ok || bad "resumed fractal weights differ"
[ "$(losses "$work/a")" = "$(losses "$work/b")" ] && ok || bad "resumed fractal losses differ"

# The experiment config, for two steps.
exp="$src/experiments/configs/fractal_vit.yaml"
"$ng" train --config "$exp" --out "$work/e" --set train.steps=2 --set data.fractal.instances=4 \
  --set data.fractal.test_instances=1 --set train.batch_size=16 --set train.eval_every=2 \
  --set schedule.warmup_steps=0 >/dev/null 2>&1 && [ -f "$work/e/result.json" ] && ok ||
  bad "$exp does not train"

# Colour and patch rendering: RGB images of 3x3 patterns, for a few steps.
out=$("$ng" train --config "$work/fr.yaml" --out "$work/c" --set data.fractal.colour=true \
  --set data.fractal.patch=3 --set train.steps=4 --set train.eval_every=4 2>&1) &&
  grep -q "16 px, 800 points, colour, patch 3" <<<"$out" && [ -f "$work/c/result.json" ] && ok ||
  bad "a colour, patch-3 fractal run failed: $(head -3 <<<"$out")"

# Instance augmentations chosen in the config: both off trains and says so; both set true are
# the defaults (the same shard bytes), flips off gives other images.
out=$("$ng" train --config "$work/fr.yaml" --out "$work/w" --set data.fractal.weight_variation=false \
  --set data.fractal.flip=false --set train.steps=4 --set train.eval_every=4 2>&1) &&
  grep -q "800 points, no weight variation or flips" <<<"$out" && [ -f "$work/w/result.json" ] && ok ||
  bad "a fractal run without weight variation and flips failed: $(head -3 <<<"$out")"
# Fewer instances than a batch: natgrad shards does not apply the trainer's checks.
few=(--set data.fractal.instances=3 --set data.fractal.test_instances=1)
shards_of "$work/fr.yaml" default "${few[@]}"
shards_of "$work/fr.yaml" on "${few[@]}" --set data.fractal.weight_variation=true --set data.fractal.flip=yes
shards_of "$work/fr.yaml" noflip "${few[@]}" --set data.fractal.flip=false
cmp -s "$work/s_default/train-000000.tar" "$work/s_on/train-000000.tar" &&
  ! cmp -s "$work/s_default/train-000000.tar" "$work/s_noflip/train-000000.tar" && ok ||
  bad "data.fractal.weight_variation and flip true should give the default images, flip false others"

expect_bad() { expect_bad_train "$work/fr.yaml" "$@"; } # NEEDLE ARGS...
expect_bad "data.fractal.categories" --set data.fractal.categories=1
expect_bad "data.fractal.instances" --set data.fractal.instances=0
expect_bad "data.fractal.test_instances" --set data.fractal.test_instances=0
expect_bad "data.fractal.side" --set data.fractal.side=2
expect_bad "data.fractal.side" --set data.fractal.side=5000
expect_bad "data.fractal.points" --set data.fractal.points=5
expect_bad "data.fractal.threshold" --set data.fractal.threshold=1.5
expect_bad "data.fractal.threshold" --set data.fractal.threshold=0
expect_bad "data.fractal.patch" --set data.fractal.patch=8
expect_bad "data.fractal.colour" --set data.fractal.colour=maybe
expect_bad "data.fractal.flip" --set data.fractal.flip=maybe
expect_bad "data.fractal.weight_variation" --set data.fractal.weight_variation=2
expect_bad "model.patch" --set model.arch=vit_tiny_patch4_28 --set data.fractal.side=30

report train_fractal
