#!/usr/bin/env bash
# SGD vs K-FAC at a small and a large batch on the MNIST subset: for each (optimizer, batch) a
# small learning-rate sweep; reports, per run, the epochs and training seconds to reach each
# target test accuracy and the final accuracy, as a markdown table (stdout and results.md).
# usage: experiments/sgd_vs_kfac/run.sh [BUILD_DIR] [OUT_DIR]
# Environment: BATCHES ("128 2048"), LRS_SGD, LRS_KFAC, EPOCHS_128, EPOCHS_2048, TARGETS ("0.96 0.97"),
# SEED (0), MNIST (../shared/data/mnist).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
out=${2:-$root/runs/sgd_vs_kfac}
batches=${BATCHES:-128 2048}
targets=${TARGETS:-0.96 0.97}
mnist=${MNIST:-$root/../shared/data/mnist}
mkdir -p "$out"
table="$out/results.md"
{
  printf '| optimizer | batch | lr | steps | '
  for t in $targets; do printf 'epochs to %s | s to %s | ' "$t" "$t"; done
  printf 'best acc | final acc | train s |\n|---|---|---|---|'
  for t in $targets; do printf -- '---|---|'; done
  printf -- '---|---|---|\n'
} >"$table"
for batch in $batches; do
  epochs_var=EPOCHS_$batch
  epochs=${!epochs_var:-$([ "$batch" -ge 1024 ] && echo 60 || echo 20)}
  for opt in sgd kfac; do
    if [ $opt = sgd ]; then lrs=${LRS_SGD:-0.02 0.05 0.1}; else lrs=${LRS_KFAC:-0.02 0.05 0.1}; fi
    for lr in $lrs; do
      # Linear scaling of the learning rate with the batch (Goyal et al.), from batch 128.
      slr=$(awk -v l="$lr" -v b="$batch" 'BEGIN { printf "%.6g", l * b / 128 }')
      run="$out/${opt}_b${batch}_lr${lr}"
      rm -rf "$run"
      "$build/natgrad" train --config "$root/experiments/sgd_vs_kfac/mnist.yaml" --out "$run" \
        --set seed="${SEED:-0}" --set data.dir="$mnist" --set train.batch_size="$batch" \
        --set train.epochs="$epochs" --set optimizer.lr="$slr" \
        --set kfac.enabled=$([ $opt = kfac ] && echo true || echo false) >"$run.log" 2>&1 ||
        { echo "run $run failed: $(tail -2 "$run.log")" >&2; continue; }
      awk -v opt="$opt" -v batch="$batch" -v lr="$slr" -v targets="$targets" '
        /"type": "eval"/ {
          match($0, /"epoch": [0-9.]+/); e = substr($0, RSTART + 9, RLENGTH - 9) + 0
          match($0, /"step": [0-9]+/); st = substr($0, RSTART + 8, RLENGTH - 8) + 0
          match($0, /"accuracy": [0-9.]+/); a = substr($0, RSTART + 12, RLENGTH - 12) + 0
          match($0, /"train_s": [0-9.]+/); s = substr($0, RSTART + 11, RLENGTH - 11) + 0
          n = split(targets, T, " ")
          for (i = 1; i <= n; i++) if (a >= T[i] && !(i in E)) { E[i] = e; S[i] = s }
          if (a > best) best = a
          last = a; secs = s; steps = st
        }
        END {
          printf "| %s | %d | %s | %d | ", opt, batch, lr, steps
          for (i = 1; i <= n; i++) {
            if (i in E) printf "%.1f | %.1f | ", E[i], S[i]; else printf "- | - | "
          }
          printf "%.2f%% | %.2f%% | %.1f |\n", 100 * best, 100 * last, secs
        }' "$run/metrics.jsonl" >>"$table"
    done
  done
done
cat "$table"
