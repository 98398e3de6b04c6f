#!/usr/bin/env bash
# FractalDB pre-training and MNIST fine-tuning of a small ViT (pretrain.yaml, finetune.yaml):
# pre-trains once with AdamW and once with K-FAC (in front of SGD with momentum), then trains on
# the MNIST subset from each pre-trained model (new head) and from scratch, with the same budget,
# for several seeds; summarize.py turns the run directories into a table and a plot.
# usage: experiments/fractal_pretrain/run.sh [BUILD_DIR] [OUT_DIR]
# Environment: PRE_EPOCHS (4), FT_EPOCHS (2), SEEDS ("0 1 2"), PRETRAIN ("adamw kfac"),
# KFAC_LR (0.05), MNIST (../shared/data/mnist), PYTHON (python3; one with matplotlib draws the
# plot); extra `--set` arguments for every run in SETS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
out=${2:-$root/runs/fractal_pretrain}
mnist=${MNIST:-$root/../shared/data/mnist}
read -r -a extra <<<"${SETS:-}"
mkdir -p "$out"

train() { # DIR ARGS...: one run, skipped when DIR already finished (the script can be re-run)
  local dir=$1
  shift
  [ -f "$dir/result.json" ] && return 0
  rm -rf "$dir"
  echo "$(date +%T) $(basename "$dir")"
  "$build/natgrad" train --out "$dir" "$@" "${extra[@]}" >"$dir.log" 2>&1 ||
    { echo "run $dir failed: $(tail -2 "$dir.log")" >&2; return 1; }
}

# Pre-training: one seed per optimizer (the expensive part); the fine-tuning seeds below vary the
# new head, the data order and dropout, not the pre-trained backbone.
for opt in ${PRETRAIN:-adamw kfac}; do
  args=(--config "$here/pretrain.yaml" --set train.epochs="${PRE_EPOCHS:-4}")
  # K-FAC preconditions SGD with momentum, as in kfac-pytorch; settings as in sgd_vs_kfac.
  [ "$opt" = kfac ] && args+=(--set kfac.enabled=true --set optimizer.name=sgd
    --set optimizer.lr="${KFAC_LR:-0.05}" --set optimizer.momentum=0.9
    --set optimizer.weight_decay=0.0005 --set kfac.factor_every=1 --set kfac.inv_every=10
    --set kfac.damping=0.03)
  train "$out/pre_$opt" "${args[@]}"
done

for seed in ${SEEDS:-0 1 2}; do
  for start in scratch ${PRETRAIN:-adamw kfac}; do
    args=(--config "$here/finetune.yaml" --set seed="$seed" --set data.dir="$mnist"
      --set train.epochs="${FT_EPOCHS:-2}")
    [ "$start" = scratch ] ||
      args+=(--set model.init="$out/pre_$start/final.safetensors" --set model.init_skip=head)
    train "$out/ft_${start}_s$seed" "${args[@]}"
  done
done
"${PYTHON:-python3}" "$here/summarize.py" "$out"
