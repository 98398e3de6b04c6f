#!/usr/bin/env bash
# FP16 inference on the CPU: trains the MNIST MLP, LeNet and a small VGG (fp32), evaluates each
# trained model in fp32, fp16 and bf16 (weights' working copy and activations stored in the half
# type, natgrad eval --set precision.compute=...), and takes each model apart with
# `natgrad bench --per-layer`. Writes OUT/results.md (accuracy and throughput per precision) and
# OUT/<model>.layers.txt / .json (the per-layer tables).
# usage: experiments/fp16_inference/run.sh [BUILD_DIR] [OUT_DIR]
# Environment: MNIST (../shared/data/mnist), BENCH_BATCH (256), BENCH_STEPS (10), and the
# epochs EPOCHS_MLP (10), EPOCHS_LENET (5), EPOCHS_VGG (3).
set -euo pipefail
# OpenMP's threads spin while OpenBLAS's work on the same cores unless told to sleep: passive
# waiting keeps the two pools from stealing each other's time (docs/BENCHMARKS.md, CPU speed).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# OpenBLAS's idle workers spin likewise between GEMMs unless this is small (README, Threads).
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
root=$(cd "$(dirname "$0")/../.." && pwd)
ng=${1:-$root/build}/natgrad
out=${2:-$root/runs/fp16_inference}
mnist=${MNIST:-$root/../shared/data/mnist}
mkdir -p "$out"
cfg=$root/experiments/configs/mnist_mlp.yaml
# The MLP is the README's main job; LeNet and VGG (16 channels doubling over 3 stages, batch norm)
# keep its data, augmentation and SGD schedule with their own epochs.
declare -A sets=(
  [mlp]="--set train.epochs=${EPOCHS_MLP:-10}"
  [lenet]="--set model.arch=lenet --set train.epochs=${EPOCHS_LENET:-5}"
  [vgg]="--set model.arch=vgg --set model.width=16 --set model.depth=3 --set model.dropout=0
         --set train.epochs=${EPOCHS_VGG:-3}"
)
field() { grep -o "\"$1\": [^,}]*" | head -1 | sed 's/.*: //; s/"//g'; }
table=$out/results.md
{
  echo "| model | fp32 acc | fp16 acc | fp16 - fp32 (points) | bf16 acc | bf16 - fp32 | fp32 img/s | fp16 img/s | bf16 img/s |"
  echo "|---|---|---|---|---|---|---|---|---|"
} >"$table"
for model in mlp lenet vgg; do
  run=$out/$model
  # shellcheck disable=SC2086 # the sets are word lists on purpose
  [ -f "$run/result.json" ] || { rm -rf "$run"; "$ng" train --config "$cfg" --out "$run" \
    --set data.dir="$mnist" ${sets[$model]} >"$run.log" 2>&1; }
  declare -A acc=() ips=()
  for p in fp32 fp16 bf16; do
    line=$("$ng" eval --config "$run/config.yaml" --weights "$run/final.safetensors" \
      --set precision.compute="$p" 2>/dev/null | grep '"type": "eval"')
    acc[$p]=$(field accuracy <<<"$line")
    ips[$p]=$(field images_per_s <<<"$line")
  done
  awk -v m="$model" -v a="${acc[fp32]}" -v h="${acc[fp16]}" -v b="${acc[bf16]}" \
    -v ia="${ips[fp32]}" -v ih="${ips[fp16]}" -v ib="${ips[bf16]}" 'BEGIN {
      printf "| %s | %.2f%% | %.2f%% | %+.2f | %.2f%% | %+.2f | %.0f | %.0f | %.0f |\n",
        m, 100 * a, 100 * h, 100 * (h - a), 100 * b, 100 * (b - a), ia, ih, ib }' >>"$table"
  "$ng" bench --config "$run/config.yaml" --per-layer --batch "${BENCH_BATCH:-256}" \
    --steps "${BENCH_STEPS:-10}" --device cpu --json "$out/$model.layers.json" >"$out/$model.layers.txt"
done
cat "$table"
