#!/usr/bin/env bash
# Issue 12's figure: FractalDB rendered on the GPU, images/s (`natgrad data-bench --device cuda`,
# apps/data_bench.c), at the sides and point counts of run.sh's CPU rows: 2D grey at 32 px (2,000
# points) and 224 px (100,000: the figure the issue compares, 1,002.5 images/s on a GPU in the
# work it follows, 5.4 on a CPU), colour with 3x3 patches, and 3D volumes. Each run prints the
# one-core CPU row (16 examples through the host's fill), the GPU row (fixed counts below, after
# one untimed batch) and a check that the GPU's first examples equal the host's, value for value
# (a mismatch exits 1 and is reported below). Seconds per row on an H200, not minutes.
# usage: experiments/data_bench/gpu.sh [PATH/TO/natgrad]   (prints the rows)
set -u
ng=${1:-build/natgrad}
here=$(cd "$(dirname "$0")" && pwd)
status=0

fr() { # SIDE POINTS EXAMPLES BATCH [--set ...]: FractalDB 2D on the GPU
  local side=$1 points=$2 n=$3 b=$4
  shift 4
  echo "== FractalDB 2D, $side px, $points points $*"
  timeout 120 "$ng" data-bench --from "$here/fractal.yaml" --device cuda --examples "$n" --batch "$b" \
    --set data.fractal.instances=1000 --set data.fractal.side="$side" \
    --set data.fractal.points="$points" "$@" 2>&1 || { s=$?; status=1; echo "(failed: status $s)"; }
}
fr3() { # SIDE POINTS EXAMPLES BATCH: FractalDB 3D on the GPU
  echo "== FractalDB 3D, $1^3, $2 points"
  timeout 120 "$ng" data-bench --from "$here/fractal3d.yaml" --device cuda --examples "$3" --batch "$4" \
    --set data.fractal3d.instances=1000 --set data.fractal3d.side="$1" \
    --set data.fractal3d.points="$2" 2>&1 || { s=$?; status=1; echo "(failed: status $s)"; }
}
fr 32 2000 65536 2048
fr 224 100000 8192 1024
fr 224 100000 8192 4096
fr 32 2000 65536 2048 --set data.fractal.colour=true --set data.fractal.patch=3
fr 224 100000 8192 1024 --set data.fractal.colour=true --set data.fractal.patch=3
fr3 16 16384 16384 2048
fr3 32 65536 4096 1024
fr3 64 262144 1024 256
exit $status
