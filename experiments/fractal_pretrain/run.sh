#!/usr/bin/env bash
# FractalDB pre-training and MNIST fine-tuning of a small ViT (pretrain.yaml, finetune.yaml):
# pre-trains with AdamW, with SGD (momentum) and with K-FAC in front of that same SGD, once per
# seed (the seed also draws the FractalDB categories), then trains on the MNIST subset from each
# pre-trained model (new head) and from scratch, with the same budget; fine-tuning seed s starts
# from pre-training seed s, so the spread over seeds holds both runs' luck. summarize.py turns the
# run directories into tables and a plot.
# usage: experiments/fractal_pretrain/run.sh [BUILD_DIR] [OUT_DIR]
# Environment: PRE_EPOCHS (4), FT_EPOCHS (2), SEEDS ("0 1 2"), PRETRAIN ("adamw sgd kfac"),
# SGD_LR (0.1; also K-FAC's), JOBS (1: runs at a time; give each NG_THREADS=cores/JOBS),
# MNIST (../shared/data/mnist), PYTHON (python3; one with matplotlib draws the plot); extra
# `--set` arguments for every run in SETS.
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
failed=0
launch() { # DIR ARGS...: train in the background, at most JOBS at a time
  while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-1}" ]; do wait -n || failed=1; done
  train "$@" &
}
drain() {
  while [ -n "$(jobs -rp)" ]; do wait -n || failed=1; done
  [ "$failed" = 0 ] || exit 1
}
pretrain=${PRETRAIN:-adamw sgd kfac}
seeds=${SEEDS:-0 1 2}

for seed in $seeds; do
  for opt in $pretrain; do
    args=(--config "$here/pretrain.yaml" --set seed="$seed" --set train.epochs="${PRE_EPOCHS:-4}")
    # SGD with momentum, and K-FAC preconditioning that same SGD, as in kfac-pytorch; settings
    # as in sgd_vs_kfac.
    [ "$opt" = adamw ] || args+=(--set optimizer.name=sgd --set optimizer.lr="${SGD_LR:-0.1}"
      --set optimizer.momentum=0.9 --set optimizer.weight_decay=0.0005)
    [ "$opt" = kfac ] && args+=(--set kfac.enabled=true --set kfac.factor_every=1
      --set kfac.inv_every=10 --set kfac.damping=0.03)
    launch "$out/pre_${opt}_s$seed" "${args[@]}"
  done
done
drain

for seed in $seeds; do
  for start in scratch $pretrain; do
    args=(--config "$here/finetune.yaml" --set seed="$seed" --set data.dir="$mnist"
      --set train.epochs="${FT_EPOCHS:-2}")
    [ "$start" = scratch ] ||
      args+=(--set model.init="$out/pre_${start}_s$seed/final.safetensors" --set model.init_skip=head)
    launch "$out/ft_${start}_s$seed" "${args[@]}"
  done
done
drain
"${PYTHON:-python3}" "$here/summarize.py" "$out"
