#!/usr/bin/env bash
# The loader-workers figures of docs/BENCHMARKS.md (data.workers): FractalDB colour 224 px with
# 3x3 patches and 100,000 points rendered on the fly (96 images, batch 16), and 480 of those
# images written once as PNG shards and decoded (448, batch 32), by 1 and by WORKERS threads
# (default: the cores). The batches are the same bits for any number of workers.
# usage: experiments/data_bench/workers.sh [PATH/TO/natgrad]   (prints the loader rows)
set -eu
ng=${1:-build/natgrad}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
workers=${WORKERS:-$(nproc)}
c224=(--set data.fractal.side=224 --set data.fractal.points=100000 --set data.fractal.colour=true
  --set data.fractal.patch=3)
"$ng" shards --from "$here/fractal.yaml" --out "$work/fr224" --shard-mib 8 --format png \
  --png-range -1,1 "${c224[@]}" --set data.fractal.categories=20 \
  --set data.fractal.instances=24 >/dev/null
for w in 1 "$workers"; do
  echo "== FractalDB colour 224 px, rendered, $w workers"
  "$ng" data-bench --from "$here/fractal.yaml" --examples 96 --batch 16 "${c224[@]}" \
    --set data.workers="$w" 2>/dev/null | grep '^loader'
  echo "== the same as PNG shards, decoded, $w workers"
  "$ng" data-bench --from "$here/fractal.yaml" --examples 448 --batch 32 "${c224[@]}" \
    --set data.name=shards --set data.dir="$work/fr224" --set data.workers="$w" 2>/dev/null |
    grep '^loader'
done
