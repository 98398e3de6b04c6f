#!/usr/bin/env bash
# FP16 inference on the CPU: trains the MNIST MLP, LeNet and a small VGG (fp32), evaluates each
# trained model in fp32, fp16 and bf16 (weights' working copy and activations stored in the half
# type, natgrad eval --set precision.compute=...), and takes each model apart with
# `natgrad bench --per-layer`. fp16 is evaluated in both arithmetics: f32 arithmetic on widened
# halves (what this CPU runs) and fp16 arithmetic (core/hgemm.h) through NG_F16_NATIVE=model, the
# scalar model with the bits of the Arm FP16 and AVX512-FP16 tiles, so the accuracy of native fp16
# arithmetic is measured on any CPU (its speed only on a CPU that has it; the model is slow).
# Writes OUT/results.md (accuracy and throughput per precision) and OUT/<model>.layers.txt /
# .json (the per-layer tables).
# usage: experiments/fp16_inference/run.sh [BUILD_DIR] [OUT_DIR]
# Environment: MNIST (../shared/data/mnist), SEEDS (the training seeds, "0 1 2": a row each),
# BENCH_BATCH (256), BENCH_STEPS (10), and the epochs EPOCHS_MLP (10), EPOCHS_LENET (5),
# EPOCHS_VGG (3).
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
  echo "| model | fp32 acc | fp16 acc | fp16 - fp32 (points) | fp16 acc, fp16 arithmetic | its - fp32 | bf16 acc | bf16 - fp32 | fp32 loss | fp16-arithmetic loss | fp32 img/s | fp16 img/s | bf16 img/s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$table"
for model in mlp lenet vgg; do
  for seed in ${SEEDS:-0 1 2}; do
    run=$out/$model-s$seed
    # shellcheck disable=SC2086 # the sets are word lists on purpose
    [ -f "$run/result.json" ] || { rm -rf "$run"; "$ng" train --config "$cfg" --out "$run" \
      --set data.dir="$mnist" --set seed="$seed" ${sets[$model]} >"$run.log" 2>&1; }
    declare -A acc=() ips=() loss=()
    for p in fp32 fp16 bf16 fp16arith; do
      native=0 prec=$p
      [ "$p" = fp16arith ] && native=model prec=fp16
      line=$(NG_F16_NATIVE=$native "$ng" eval --config "$run/config.yaml" \
        --weights "$run/final.safetensors" --set precision.compute="$prec" 2>/dev/null |
        grep '"type": "eval"')
      acc[$p]=$(field accuracy <<<"$line")
      loss[$p]=$(field loss <<<"$line")
      ips[$p]=$(field images_per_s <<<"$line")
    done
    awk -v m="$model seed $seed" -v a="${acc[fp32]}" -v h="${acc[fp16]}" \
      -v n="${acc[fp16arith]}" -v b="${acc[bf16]}" -v la="${loss[fp32]}" \
      -v ln="${loss[fp16arith]}" -v ia="${ips[fp32]}" -v ih="${ips[fp16]}" -v ib="${ips[bf16]}" \
      'BEGIN { printf "| %s | %.2f%% | %.2f%% | %+.2f | %.2f%% | %+.2f | %.2f%% | %+.2f | %.6f | %.6f | %.0f | %.0f | %.0f |\n",
        m, 100 * a, 100 * h, 100 * (h - a), 100 * n, 100 * (n - a), 100 * b, 100 * (b - a),
        la, ln, ia, ih, ib }' >>"$table"
  done
  NG_F16_NATIVE=0 "$ng" bench --config "$run/config.yaml" --per-layer --batch "${BENCH_BATCH:-256}" \
    --steps "${BENCH_STEPS:-10}" --device cpu --json "$out/$model.layers.json" \
    >"$out/$model.layers.txt"
done
cat "$table"
