#!/usr/bin/env bash
# natgrad train end to end on small synthetic runs: same seed gives identical bits; k steps, stop,
# resume, k more equals 2k straight steps bit for bit (weights and logged losses); bad configs
# exit 2 naming the key or file and leave no run directory behind.
# usage: train_cli.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"

small_yaml

"$ng" train --config "$work/small.yaml" --out "$work/a" >/dev/null 2>&1 || bad "run a failed"
"$ng" train --config "$work/small.yaml" --out "$work/b" >/dev/null 2>&1 || bad "run b failed"
cmp -s "$work/a/final.safetensors" "$work/b/final.safetensors" && ok || bad "same seed, different weights"
[ "$(losses "$work/a")" = "$(losses "$work/b")" ] && [ "$(losses "$work/a" | wc -l)" -eq 40 ] && ok ||
  bad "same seed, different logged losses"
"$ng" train --config "$work/small.yaml" --out "$work/s" --set seed=4 >/dev/null 2>&1
cmp -s "$work/a/final.safetensors" "$work/s/final.safetensors" && bad "another seed, same weights" || ok

# Stop at 15 (mid-epoch: 12 batches per epoch), resume, finish: as if never interrupted.
"$ng" train --config "$work/small.yaml" --out "$work/c" --set train.stop_at_step=15 >/dev/null 2>&1 ||
  bad "stopped run failed"
[ -f "$work/c/checkpoints/step-00000015/COMPLETE" ] && [ ! -f "$work/c/final.safetensors" ] && ok ||
  bad "a stopped run leaves a complete checkpoint at step 15 and no final weights"
# A crash mid-checkpoint leaves a folder without COMPLETE: resume must ignore it.
mkdir -p "$work/c/checkpoints/step-00000020" && echo junk >"$work/c/checkpoints/step-00000020/model.safetensors"
out=$("$ng" train --config "$work/small.yaml" --out "$work/c" --resume auto 2>&1) || bad "resume failed: $out"
grep -q "resumed from .*step-00000015" <<<"$out" && ok || bad "resume should take step 15: $out"
cmp -s "$work/a/final.safetensors" "$work/c/final.safetensors" && ok || bad "resumed weights differ"
[ "$(losses "$work/a")" = "$(losses "$work/c")" ] && ok || bad "resumed losses differ"
"$ng" train --config "$work/small.yaml" --out "$work/a" >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "reusing a finished run directory without --resume should exit 2"
# eval reads the final weights back
out=$("$ng" eval --config "$work/small.yaml" --weights "$work/a/final.safetensors" 2>&1) &&
  grep -q '"accuracy"' <<<"$out" && ok || bad "eval: $out"

# K-FAC (true Fisher, factors every 2 steps, inverses every 3): resume past step 15 is bit-exact too,
# since the factors and eigendecompositions travel in the checkpoint.
kf=(--set kfac.enabled=true --set kfac.fisher=true --set kfac.factor_every=2 --set kfac.inv_every=3
  --set kfac.damping=0.03)
"$ng" train --config "$work/small.yaml" --out "$work/k1" "${kf[@]}" >/dev/null 2>&1 || bad "kfac run failed"
"$ng" train --config "$work/small.yaml" --out "$work/k2" "${kf[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
"$ng" train --config "$work/small.yaml" --out "$work/k2" "${kf[@]}" --resume auto >/dev/null 2>&1 ||
  bad "kfac resume failed"
[ -f "$work/k2/checkpoints/step-00000040/kfac.safetensors" ] && ok || bad "kfac state not checkpointed"
cmp -s "$work/k1/final.safetensors" "$work/k2/final.safetensors" && ok || bad "kfac resumed weights differ"
cmp -s "$work/a/final.safetensors" "$work/k1/final.safetensors" && bad "kfac changed nothing" || ok
out=$("$ng" train --config "$work/small.yaml" --out "$work/k2" --resume auto 2>&1)
[ $? -eq 2 ] && grep -q "kfac.enabled: true -> false" <<<"$out" && ok ||
  bad "resuming a K-FAC run without K-FAC should name the changed key: $out"
out=$("$ng" train --config "$work/small.yaml" --out "$work/k2" --resume "$work/k2/checkpoints/step-00000030" \
  --allow-config-change 2>&1)
[ $? -eq 2 ] && grep -q "K-FAC" <<<"$out" && ok || bad "a K-FAC checkpoint without K-FAC: $out"

# Loss smoothing (a wrapper in front of the optimizer): amplitude 0 is plain SGD bit for bit; a
# stopped and resumed run draws the same perturbations as the uninterrupted one.
"$ng" train --config "$work/small.yaml" --out "$work/z0" --set smoothing.enabled=true \
  --set smoothing.amplitude=0 >/dev/null 2>&1 || bad "smoothing with amplitude 0 failed"
cmp -s "$work/a/final.safetensors" "$work/z0/final.safetensors" && ok || bad "amplitude 0 is not plain SGD"
sm=(--set smoothing.enabled=true --set smoothing.amplitude=0.02 --set smoothing.schedule=cosine
  --set smoothing.scale_by_weight=true)
"$ng" train --config "$work/small.yaml" --out "$work/z1" "${sm[@]}" >/dev/null 2>&1 || bad "smoothing run failed"
"$ng" train --config "$work/small.yaml" --out "$work/z2" "${sm[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
"$ng" train --config "$work/small.yaml" --out "$work/z2" "${sm[@]}" --resume auto >/dev/null 2>&1 ||
  bad "smoothing resume failed"
cmp -s "$work/z1/final.safetensors" "$work/z2/final.safetensors" && ok || bad "smoothing resumed weights differ"
cmp -s "$work/a/final.safetensors" "$work/z1/final.safetensors" && bad "smoothing changed nothing" || ok
grep -Eq '"smoothing_amplitude": 0.02[,}]' "$work/z1/metrics.jsonl" && ok || bad "no smoothing_amplitude in metrics"
# Fisher-shaped noise drawn from K-FAC's eigendecompositions (inverses every 3 steps): they travel in
# the checkpoint, so a run stopped at 15 and resumed draws what the uninterrupted one drew.
fz=("${kf[@]}" --set smoothing.enabled=true --set smoothing.noise=fisher --set smoothing.amplitude=0.005)
"$ng" train --config "$work/small.yaml" --out "$work/f1" "${fz[@]}" >/dev/null 2>&1 || bad "fisher smoothing run failed"
"$ng" train --config "$work/small.yaml" --out "$work/f2" "${fz[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
"$ng" train --config "$work/small.yaml" --out "$work/f2" "${fz[@]}" --resume auto >/dev/null 2>&1 ||
  bad "fisher smoothing resume failed"
cmp -s "$work/f1/final.safetensors" "$work/f2/final.safetensors" && ok || bad "fisher smoothing resumed weights differ"
cmp -s "$work/k1/final.safetensors" "$work/f1/final.safetensors" && bad "fisher smoothing changed nothing" || ok
grep -q '"step": 2,.*"smoothing_fisher_layers": [1-9]' "$work/f1/metrics.jsonl" && ok ||
  bad "fisher smoothing drew no Fisher-shaped layer at step 2"
# Noisy K-FAC: weight samples from K-FAC's eigendecompositions each step; a run stopped at 15 and
# resumed samples what the uninterrupted one did. Every eval line reports ECE.
nz=("${kf[@]}" --set noisy.enabled=true --set noisy.kl_weight=0.1 --set noisy.prior_precision=10)
"$ng" train --config "$work/small.yaml" --out "$work/n1" "${nz[@]}" >/dev/null 2>&1 || bad "noisy run failed"
"$ng" train --config "$work/small.yaml" --out "$work/n2" "${nz[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
"$ng" train --config "$work/small.yaml" --out "$work/n2" "${nz[@]}" --resume auto >/dev/null 2>&1 ||
  bad "noisy resume failed"
cmp -s "$work/n1/final.safetensors" "$work/n2/final.safetensors" && ok || bad "noisy resumed weights differ"
cmp -s "$work/n1/final.safetensors" "$work/k1/final.safetensors" && bad "noisy changed nothing" || ok
grep -q '"step": 2,.*"noisy_layers": [1-9]' "$work/n1/metrics.jsonl" && ok ||
  bad "noisy drew no sample at step 2"
grep -q '"type": "eval".*"ece": [0-9]' "$work/n1/metrics.jsonl" && ok || bad "no ece in the eval line"
# Evaluation over 4 weight samples: training is untouched (the mean is restored exactly), the eval
# figures differ from the mean's and repeat for the seed. With lambda = 0 (no noise) the run is
# K-FAC's bit for bit and 3 samples evaluate as the mean does (to rounding).
evals() { grep '"type": "eval"' "$1/metrics.jsonl" | sed 's/, "train_s".*//'; }
"$ng" train --config "$work/small.yaml" --out "$work/n3" "${nz[@]}" --set noisy.eval_samples=4 >/dev/null 2>&1 ||
  bad "noisy run with 4 eval samples failed"
"$ng" train --config "$work/small.yaml" --out "$work/n4" "${nz[@]}" --set noisy.eval_samples=4 >/dev/null 2>&1
cmp -s "$work/n1/final.safetensors" "$work/n3/final.safetensors" && ok || bad "eval samples changed training"
[ "$(evals "$work/n3")" = "$(evals "$work/n4")" ] && ok || bad "eval over samples is not deterministic"
[ "$(evals "$work/n1")" != "$(evals "$work/n3")" ] && ok || bad "eval over 4 samples equals the mean's"
"$ng" train --config "$work/small.yaml" --out "$work/n5" "${nz[@]}" --set noisy.kl_weight=0 \
  --set noisy.eval_samples=3 >/dev/null 2>&1 || bad "noisy run with lambda 0 failed"
cmp -s "$work/k1/final.safetensors" "$work/n5/final.safetensors" && ok || bad "lambda 0 is not K-FAC"
paste -d'\n' <(evals "$work/k1") <(evals "$work/n5") | awk -F'[:,]' '
  { for (i = 1; i <= NF; i++) if ($i ~ /"(loss|accuracy|ece)"/) v[NR % 2, i] = $(i + 1) }
  NR % 2 == 0 { for (i = 1; i <= NF; i++) if ((0, i) in v) { d = v[0, i] - v[1, i]; if (d < 0) d = -d
    if (d > 1e-6) bad = 1 } n++ }
  END { exit bad || n != 2 }' && ok || bad "lambda 0: eval over 3 samples differs from the mean's"

# Bad input: status 2, the key or file named, and no run directory.
expect_bad() { # NEEDLE ARGS...
  local needle=$1
  shift
  rm -rf "$work/bad"
  local out status
  out=$("$ng" train --config "$work/small.yaml" --out "$work/bad" "$@" 2>&1)
  status=$?
  if [ $status -eq 2 ] && grep -q -- "$needle" <<<"$out" && [ ! -e "$work/bad" ]; then ok; else
    bad "train $* -> status $status, want 2 naming '$needle' and no run dir: $(head -3 <<<"$out")"
  fi
}
expect_bad "optimizer.lrr" --set optimizer.lrr=0.1
expect_bad "did you mean optimizer.lr" --set optimizer.lrr=0.1
expect_bad "optimizer.lr" --set optimizer.lr=-0.1
expect_bad "optimizer.lr: 'fast' is not a number" --set optimizer.lr=fast
expect_bad "optimizer.name" --set optimizer.name=adam
expect_bad "sgd|adamw" --set optimizer.name=adam
expect_bad "train.batch_size" --set train.batch_size=0
expect_bad "/nonexistent/mnist" --set data.name=mnist --set data.dir=/nonexistent/mnist
expect_bad "model.arch" --set model.arch=resnet
expect_bad "kfac.damping" --set kfac.enabled=true --set kfac.damping=0
expect_bad "kfac.inverse" --set kfac.enabled=true --set kfac.inverse=cholesky --set kfac.damping_mode=sum
expect_bad "kfac.enabled" --set kfac.enabled=true --set optimizer.name=adamw
expect_bad "kfac.damping_units" --set kfac.enabled=true --set kfac.damping_units=torch
expect_bad "smoothing.noise" --set smoothing.enabled=true --set smoothing.noise=laplace
expect_bad "smoothing.noise: fisher .*kfac.enabled=true" --set smoothing.enabled=true --set smoothing.noise=fisher
expect_bad "smoothing.noise: fisher .*kfac.inverse=eigen" --set smoothing.enabled=true --set smoothing.noise=fisher \
  --set kfac.enabled=true --set kfac.inverse=cholesky --set kfac.damping_mode=factored
expect_bad "smoothing.fisher_damping" --set smoothing.enabled=true --set smoothing.noise=fisher \
  --set kfac.enabled=true --set smoothing.fisher_damping=-1
expect_bad "noisy.enabled.*kfac.enabled=true" --set noisy.enabled=true
expect_bad "noisy.kl_weight" --set noisy.enabled=true --set kfac.enabled=true --set noisy.kl_weight=-1
expect_bad "noisy.prior_precision" --set noisy.enabled=true --set kfac.enabled=true \
  --set noisy.prior_precision=0
expect_bad "noisy.eval_samples" --set noisy.enabled=true --set kfac.enabled=true --set noisy.eval_samples=0
expect_bad "noisy.dataset_size" --set noisy.enabled=true --set kfac.enabled=true --set noisy.dataset_size=-3
expect_bad "noisy.enabled.*smoothing.enabled" --set noisy.enabled=true --set kfac.enabled=true \
  --set smoothing.enabled=true
expect_bad "noisy.enabled.*damping_units" --set noisy.enabled=true --set kfac.enabled=true \
  --set kfac.damping_units=kfac-pytorch
printf 'optimizer:\n  lr: [1, 2\n' >"$work/broken.yaml"
rm -rf "$work/bad"
out=$("$ng" train --config "$work/broken.yaml" --out "$work/bad" 2>&1)
[ $? -eq 2 ] && grep -q "broken.yaml line" <<<"$out" && [ ! -e "$work/bad" ] && ok || bad "YAML syntax error: $out"
printf 'optimizer:\n  lr: 0.1\n  momentun: 0.9\n' >"$work/typo.yaml"
out=$("$ng" train --config "$work/typo.yaml" --out "$work/bad" 2>&1)
[ $? -eq 2 ] && grep -q "typo.yaml line 3" <<<"$out" && grep -q "optimizer.momentum" <<<"$out" && ok ||
  bad "unknown key in file: $out"
out=$("$ng" train --config "$work/missing.yaml" 2>&1)
[ $? -eq 2 ] && grep -q "missing.yaml" <<<"$out" && ok || bad "missing config file: $out"

report train_cli
