#!/usr/bin/env bash
# The data figures of docs/BENCHMARKS.md ("Data: fractal rendering and the loader"): FractalDB 2D
# and 3D images/s on one core at the stated sides and point counts, and the loader's images/s
# from an in-memory MNIST set, from tar shards of it (npy and png members), and from one PNG file
# per image. Every figure is `natgrad data-bench` (apps/data_bench.c); images/cpu_s divides by
# the process's CPU time, which holds up better than wall time on a shared machine. Each file
# layout is timed warm (the files in the page cache) and then cold (`--cold`: the files dropped
# from the page cache before each pass, its residency line printed above the row, marked cold);
# a cold pass whose files stay cached (tmpfs) is refused and its error shown instead of a row, so
# $TMPDIR must be on a disk.
# usage: experiments/data_bench/run.sh [PATH/TO/natgrad] [MNIST_DIR]   (prints the tables)
set -eu
ng=${1:-build/natgrad}
mnist=${2:-../shared/data/mnist}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fr() { # SIDE POINTS EXAMPLES [--set ...]: FractalDB 2D on one thread
  local side=$1 points=$2 n=$3
  shift 3
  "$ng" data-bench --from "$here/fractal.yaml" --examples "$n" --set data.fractal.side="$side" \
    --set data.fractal.points="$points" "$@" 2>/dev/null | sed -n '1p;2p;3p'
}
fr3() { # SIDE POINTS EXAMPLES: FractalDB 3D on one thread
  "$ng" data-bench --from "$here/fractal3d.yaml" --examples "$3" --set data.fractal3d.side="$1" \
    --set data.fractal3d.points="$2" 2>/dev/null | sed -n '1p;2p;3p'
}
echo "== FractalDB 2D, grey, single pixels"
fr 32 2000 4000
fr 224 100000 100
echo "== FractalDB 2D, colour, 3x3 patches"
fr 32 2000 4000 --set data.fractal.colour=true --set data.fractal.patch=3
fr 224 100000 100 --set data.fractal.colour=true --set data.fractal.patch=3
echo "== FractalDB 3D"
fr3 16 16384 1000
fr3 32 65536 200
fr3 64 262144 40

# MNIST (the subset in $mnist): in memory, as shards of npy and of png members, as PNG files.
m=(--set data.dir="$mnist" --set data.shuffle_buffer=1000 --set data.augment.crop_pad=0)
"$ng" shards --from "$here/mnist.yaml" --out "$work/npy" --shard-mib 16 "${m[@]}" >/dev/null
"$ng" shards --from "$here/mnist.yaml" --out "$work/png" --shard-mib 4 --format png \
  --png-range -0.4243,2.8215 "${m[@]}" >/dev/null
cold() { # the residency lines and the cold rows of a --cold run (or its refusal)
  grep -E '^cold:|, cold\)|error' || true
}
echo "== MNIST in memory (and one PNG file per image, warm then cold)"
"$ng" data-bench --from "$here/mnist.yaml" --examples 7936 "${m[@]}" --png-dir "$work/files" \
  --png-range -0.4243,2.8215 2>/dev/null
"$ng" data-bench --from "$here/mnist.yaml" --examples 7936 "${m[@]}" --png-dir "$work/files" \
  --png-range -0.4243,2.8215 --cold 2>&1 | cold
for f in npy png; do
  echo "== MNIST from tar shards of $f members ($(ls "$work/$f" | grep -c train) train shards), warm then cold"
  "$ng" data-bench --from "$here/mnist.yaml" --examples 7936 "${m[@]}" --set data.name=shards \
    --set data.dir="$work/$f" 2>/dev/null | sed -n '2,4p'
  "$ng" data-bench --from "$here/mnist.yaml" --examples 7936 "${m[@]}" --set data.name=shards \
    --set data.dir="$work/$f" --cold 2>&1 | cold
done


# Loader workers: rendering and PNG decoding by 1 and by WORKERS threads (workers.sh).
WORKERS=${WORKERS:-$(nproc)} bash "$here/workers.sh" "$ng"
