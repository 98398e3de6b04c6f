#!/usr/bin/env bash
# Data-parallel throughput of natgrad train on 1, 2 and 4 ranks of one machine (mpirun), for the
# MNIST MLP and a small ViT: images/s in total and per rank, scaling efficiency against one rank,
# and how much of the gradient all-reduce the buckets hide behind backward (the wait after
# backward with comm.bucket_mib=0.25 buckets, against one bucket of the whole gradient, which can only
# start when backward has finished). Prints a markdown table.
# usage: experiments/scaling/run.sh BUILD_DIR OUT_DIR [RANKS...]   (default ranks: 1 2 4)
set -euo pipefail
build=$1 out=$2
shift 2
ranks=("$@")
[ ${#ranks[@]} -gt 0 ] || ranks=(1 2 4)
ng=$build/natgrad
here=$(cd "$(dirname "$0")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export OPENBLAS_NUM_THREADS=1 # one core per rank, as a rank per GPU would have
mkdir -p "$out"
# images/s over the run's training time (eval excluded), from the last eval line.
ips() { grep '"type": "eval"' "$1/metrics.jsonl" | tail -1 |
  sed 's/.*"step": \([0-9]*\),.*"train_s": \([0-9.]*\).*/\1 \2/' | awk -v b="$2" '{ printf "%.0f", $1 * b / $2 }'; }
wait_ms() { sed -n 's/.*per step \([0-9.]*\) ms of backward, \([0-9.]*\) ms waiting.*/\1 \2/p' "$1"; }
echo "| model | ranks | batch/rank | images/s | per rank | efficiency | backward ms | wait ms (buckets) | wait ms (one bucket) | hidden |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for model in mlp vit; do
  cfg=$here/$model.yaml
  batch=$(sed -n 's/.*batch_size: \([0-9]*\).*/\1/p' "$cfg")
  base=""
  for n in "${ranks[@]}"; do
    for b in 0.25 1024; do
      dir=$out/$model-np$n-b$b
      rm -rf "$dir"
      mpirun --oversubscribe -np "$n" "$ng" train --config "$cfg" --out "$dir" \
        --set comm.bucket_mib=$b >"$dir.log" 2>&1
    done
    r=$(ips "$out/$model-np$n-b0.25" "$batch")
    [ -n "$base" ] || base=$r
    read -r bw w <<<"$(wait_ms "$out/$model-np$n-b0.25.log")" || true
    read -r _ w1 <<<"$(wait_ms "$out/$model-np$n-b1024.log")" || true
    hidden=$(awk -v a="${w:-}" -v b="${w1:-}" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * (1 - a / b); else print "-" }')
    awk -v m="$model" -v n="$n" -v bt="$batch" -v r="$r" -v base="$base" -v bw="${bw:--}" -v w="${w:--}" -v w1="${w1:--}" -v h="$hidden" \
      'BEGIN { printf "| %s | %d | %d | %d | %.0f | %.2f | %s | %s | %s | %s |\n", m, n, bt / n, r, r / n, r / (base * n), bw, w, w1, h }'
  done
done
