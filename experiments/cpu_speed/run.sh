#!/usr/bin/env bash
# natgrad against PyTorch on the CPU, forward + cross-entropy + backward, fp32, the same models,
# batches and thread count, measured in the same run (PyTorch from Debian's python3-torch, used
# only here). On a shared machine the figures move with the other load: each model runs
# natgrad and PyTorch back to back, `rounds` times, and the best round of each is compared.
#
#   experiments/cpu_speed/run.sh [BUILD_DIR] [THREADS] [ROUNDS] [STEPS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build-cpu}
threads=${2:-2}
rounds=${3:-2}
steps=${4:-5}
# Both sides run on GNU OpenMP, whose threads spin at barriers by default; on a machine shared
# with other jobs a spinning thread keeps the core from the thread it waits for, and either side's
# figure then swings 2-5x between runs. Passive waiting (the same for both) is the fair setting
# there; pass OMP_WAIT_POLICY=active to measure the default.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# OpenBLAS's idle workers spin likewise between GEMMs unless this is small (README, Threads).
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
py=/usr/bin/python3 # Debian's interpreter, which python3-torch installs into
$py -c 'import torch' 2>/dev/null || {
  echo "run.sh: PyTorch missing: apt-get install python3-torch" >&2
  exit 2
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# model:batch[:img]
models=${NG_SPEED_MODELS:-"mlp:256 lenet:256 vgg:64 nin:64 cnn3d:2 vit:64"}
echo "cpu_speed: $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "threads $threads, $rounds rounds of $steps steps, OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
printf '%-10s %6s %14s %14s %8s\n' model batch "natgrad ms" "pytorch ms" ratio
for m in $models; do
  IFS=: read -r name batch img <<<"$m"
  imgarg=()
  [ -n "${img:-}" ] && imgarg=(--img "$img")
  best_ng=inf best_pt=inf
  for r in $(seq "$rounds"); do
    NG_THREADS=$threads "$build/natgrad" bench --model "$name" --batch "$batch" --steps "$steps" \
      --device cpu "${imgarg[@]}" --json "$tmp/ng.json" >/dev/null
    ng=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['ms_per_step'])" "$tmp/ng.json")
    pt=$(OMP_NUM_THREADS=$threads $py "$here/torch_zoo.py" --model "$name" --batch "$batch" \
      --steps "$steps" --threads "$threads" "${imgarg[@]}" |
      $py -c "import json,sys; print(json.load(sys.stdin)['ms_per_step'])")
    best_ng=$($py -c "print(min(float('$best_ng'), $ng))")
    best_pt=$($py -c "print(min(float('$best_pt'), $pt))")
  done
  # ratio > 1: natgrad is faster (PyTorch's time / natgrad's)
  $py -c "import sys; n, p = float(sys.argv[3]), float(sys.argv[4]);
print('%-10s %6s %14.1f %14.1f %7.2fx' % (sys.argv[1], sys.argv[2], n, p, p / n))" \
    "$name${img:+@$img}" "$batch" "$best_ng" "$best_pt"
done
