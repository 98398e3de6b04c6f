#!/usr/bin/env bash
# The main job's claim: the MLP of experiments/configs/mnist_mlp.yaml reaches at least 97% test
# accuracy on the MNIST subset (7,996 train / 2,004 test). Skips (77) where the subset is absent.
# usage: train_mnist.sh PATH/TO/natgrad SOURCE_DIR
set -u
ng=$1 src=$2
mnist=${NG_SHARED_DIR:-$src/../shared}/data/mnist
if [ ! -f "$mnist/train-images-idx3-ubyte.gz" ]; then
  echo "train_mnist: skipped, no MNIST subset at $mnist"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$("$ng" train --config "$src/experiments/configs/mnist_mlp.yaml" --out "$work/run" \
  --set data.dir="$mnist" --set data.fallback_synthetic=false 2>&1) || { echo "$out" | tail; exit 1; }
line=$(grep "^test accuracy" <<<"$out")
echo "$line"
acc=$(sed 's/test accuracy \([0-9.]*\)%.*/\1/' <<<"$line")
if awk -v a="$acc" 'BEGIN { exit !(a >= 97.0) }'; then
  echo "train_mnist: 1 passed, 0 failed"
else
  echo "train_mnist: 0 passed, 1 failed (test accuracy $acc% < 97%)"
  exit 1
fi
