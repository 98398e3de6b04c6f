#!/usr/bin/env bash
# Everything a GPU session should run, in one go: the gpu-labelled tests, then the benchmarks that
# docs/BENCHMARKS.md compares with ../shared/docs/gpu.md's PyTorch figures. Output goes to stdout
# and, as JSON and logs, to $OUT (or ./gpu-results). Uses an existing build folder when given one
# that was made with -DCMAKE_CUDA_ARCHITECTURES=90 (e.g. carried to the GPU machine).
# The GPU machine is bare and offline, so the usual argument is a bundle made here by
# scripts/gpu-bundle.sh (natgrad, the gpu tests, the libraries that machine lacks and OpenMPI's
# run-time, set up by the bundle's env.sh), carried by
# the device call: `bash scripts/gpu-session.sh .gpu/natgrad-gpu.tar.xz` with carry [".gpu"].
# The work is in sections, run in the order given (default: all, most important first). A call
# that a time limit ends can be followed, on the still-warm machine, by one that runs the sections
# it did not reach: each section's exit status and seconds go to sections.jsonl in the results.
# usage: scripts/gpu-session.sh [BUILD_DIR | BUNDLE.tar.xz] [SECTION ...]
# SECTION: tests train core peer fractal cnn3d plan layers comm workers
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift $(($# > 0 ? 1 : 0))
all=(tests train core peer fractal cnn3d plan layers comm workers)
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=("${all[@]}")
for s in "${sections[@]}"; do
  [[ " ${all[*]} " == *" $s "* ]] || {
    echo "gpu-session: unknown section '$s' (one of: ${all[*]})" >&2
    exit 2
  }
done
# Under the device tool only 8 files come back from $OUT: the results are written to a folder
# of their own and packed into $OUT/results.tgz after every step (what a time limit leaves is
# the last pack), besides the tool's tail of stdout.
out=${OUT:+/tmp/gpu-results}
out=${out:-$root/gpu-results}
mkdir -p "$out"
# A file comes back only up to 16 MiB, so the pack holds the results' files of up to 2 MiB each
# (logs, JSON, metrics) and names the others in left-out.txt (weights, checkpoints).
pack() {
  [ -n "${OUT:-}" ] || return 0
  (cd "$out" && find . -type f -size +2M -printf '%s %p\n' >left-out.txt &&
    find . -type f -size -2049k -print >/tmp/gpu-pack-list &&
    tar -czf "$OUT/results.tgz.tmp" -T /tmp/gpu-pack-list) &&
    mv "$OUT/results.tgz.tmp" "$OUT/results.tgz"
}
trap pack EXIT
trap 'exit 143' TERM INT # so that a timeout's SIGTERM still packs (EXIT); SIGKILL cannot
if [ -f "$build" ]; then # a bundle: unpack it; its env.sh sets the library paths, PATH and OpenMPI's
  b=/tmp/natgrad-bundle
  rm -rf "$b" && mkdir -p "$b" && tar -C "$b" -xJf "$build" || exit 1
  # shellcheck source=/dev/null
  . "$b/env.sh" # its libraries first, then CUDA's and PyTorch's NVIDIA ones; mpirun; OpenMPI relocated
  build=$b/bin
  mnist=$b/data/mnist # the MNIST subset the bundle carries
  echo "bundle: $b; LD_LIBRARY_PATH=$LD_LIBRARY_PATH; mpirun: $(command -v mpirun)" | tee "$out/bundle.txt"
  ldd "$build/natgrad" | grep -E 'not found|cudnn|nccl|cublas' | tee -a "$out/bundle.txt"
fi
ng="$build/natgrad"
if [ ! -x "$ng" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CUDA_ARCHITECTURES=90 && ninja -C "$build" || exit 1
fi
"$ng" info | tee "$out/info.txt"
# The sections, most important first (the default order).
cnn3d_gpu_md=(--set data.name=synthetic3d --set model.arch=cnn3d --set model.width=16
  --set model.depth=6 --set data.synthetic.classes=2 --set device=cuda)
section_tests() {
  # Most important first: the call may end at its time limit; what is under $OUT still comes back.
  if [ -f "$build/CTestTestfile.cmake" ]; then
    timeout 300 ctest --test-dir "$build" -L gpu --timeout 120 --output-on-failure 2>&1 |
      tee "$out/gpu-tests.log"
  else # a bundle has no CTest files (their paths are this machine's): the programs one by one
    for t in $(cat "$build/gpu-tests.txt"); do
      timeout 120 "$build/$t" >"$out/$t.log" 2>&1
      echo "$t: exit $? ($(tail -1 "$out/$t.log"))"
    done 2>&1 | tee "$out/gpu-tests.log"
  fi
  pack
  "$ng" smoke 2>&1 | tee -a "$out/gpu-tests.log"
}
section_train() {
  # Training on the GPU beside the same run on this machine's CPU: fp32, fp16 with loss scaling,
  # bf16, and K-FAC under mpirun with one rank (the NCCL communicator's setup; buckets and
  # distributed K-FAC start at two ranks, i.e. two GPUs, as NCCL refuses two ranks on one
  # device), each a short run of the main job on the bundle's MNIST subset. One line per run
  # (its test accuracy, or its error) in train.log; each run's small files in train-NAME/.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  local cfg="$root/experiments/configs/mnist_mlp.yaml" runs=/tmp/natgrad-train
  local data=(--set data.fallback_synthetic=true)
  [ -d "${mnist:-}" ] && data+=(--set "data.dir=$mnist")
  local kfac=(--set kfac.enabled=true --set optimizer.lr=0.005 --set kfac.damping=0.03)
  rm -rf "$runs" && mkdir -p "$runs"
  run() { # NAME LAUNCH... -- ARGS...: one training run, its verdict line, its small files kept
    local name=$1 launch=()
    shift
    while [ "$1" != -- ]; do launch+=("$1") && shift; done
    shift
    timeout 180 "${launch[@]}" "$ng" train --config "$cfg" --out "$runs/$name" --set train.steps=300 \
      "${data[@]}" "$@" >"$out/train-$name.log" 2>&1
    local rc=$?
    printf '%-16s exit %3d  %s\n' "$name" "$rc" \
      "$(grep -hE 'test accuracy .* after|natgrad: error|ranks \(' "$out/train-$name.log" | tr '\n' ' ')" |
      tee -a "$out/train.log"
    mkdir -p "$out/train-$name"
    cp "$runs/$name"/{config.yaml,metrics.jsonl,result.json,memory.json} "$out/train-$name/" 2>/dev/null
  }
  for p in fp32 fp16 bf16; do
    for dev in cuda cpu; do run "$p-$dev" -- --set device=$dev --set precision.compute=$p; done
  done
  # both under mpirun, which binds a rank to one core: the CPU side's thread count changes its
  # sums' order, and K-FAC carries such differences further than SGD
  run kfac-nccl mpirun -np 1 -- --set device=cuda "${kfac[@]}"
  run kfac-cpu mpirun -np 1 -- --set device=cpu "${kfac[@]}"
  # Two ranks under mpirun on the CPU (device=cpu: NCCL refuses two ranks on one GPU), which the
  # one-rank NCCL run above does not exercise: the bundle's shared-memory transport.
  run mpi2-cpu mpirun -np 2 -- --set device=cpu --set train.steps=50 --set schedule.warmup_epochs=0
  rm -rf "$runs"
}
section_core() {
  "$ng" bench-core --device cuda --gemm 4096,8192 --eigh 1024,2048,4096 --json "$out/bench-core.json"
}
section_peer() {
  # Issue 14's table: whole training steps (natgrad bench --step: forward, backward, the optimizer
  # chain) beside PyTorch eager and torch.compile in one Python process, then the markdown table.
  vit=(--config "$root/experiments/gpu_peer/vit_ti16.yaml" --step --device cuda)
  step() { # NAME ARGS...
    local name=$1
    shift
    timeout 120 "$ng" bench "${vit[@]}" "$@" --json "$out/step_$name.json" 2>&1 | tail -1
  }
  step vit_ti16_bf16_sgd --steps 30
  step vit_ti16_fp32_sgd --steps 30 --precision fp32
  step vit_ti16_bf16_kfac10_100 --steps 200 --set kfac.enabled=true --set kfac.factor_every=10 \
    --set kfac.inv_every=100
  step vit_ti16_bf16_kfac1_1 --steps 10 --set kfac.enabled=true --set kfac.factor_every=1 \
    --set kfac.inv_every=1
  step vit_b16_bf16_sgd --steps 30 --batch 128 --set model.arch=vit_base_patch16_224 \
    --set train.batch_size=128
  timeout 420 python3 "$root/experiments/gpu_peer/torch_peer.py" gemm:4096,8192 eigh:1024,2048,4096 \
    vit:vit_tiny_patch16_224:256:bf16:eager vit:vit_tiny_patch16_224:256:fp32:eager \
    vit:vit_base_patch16_224:128:bf16:eager vit:vit_tiny_patch16_224:256:bf16:compile \
    vit:vit_base_patch16_224:128:bf16:compile | tee "$out/torch_peer.jsonl"
  python3 "$root/experiments/gpu_peer/summarize.py" "$out" | tee "$out/peer_table.md"
}
section_fractal() {
  # Issue 12: FractalDB rendered on the GPU, images/s beside one CPU core, each row checking the GPU's
  # first examples against the host's fill (test_fractal_gpu above checks the rest); fixed image
  # counts, seconds a row.
  timeout 300 bash "$root/experiments/data_bench/gpu.sh" "$ng" 2>&1 | tee "$out/fractal_gpu.txt"
}
section_cnn3d() {
  "$ng" bench --model cnn3d --img 128 --batch 2 --device cuda --json "$out/cnn3d_128.json"
  "$ng" bench --model cnn3d --img 128 --batch 2 --device cuda --checkpoint all --json "$out/cnn3d_128_ckpt.json"
  # Issue 10's figures: the 3D-CNN at 128^3 batch 2 in fp16, plain and checkpointed, beside PyTorch
  # on the same GPU; the largest cube natgrad plans (and then trains) against PyTorch's.
  for ck in none all recompute; do
    "$ng" bench --model cnn3d --img 128 --batch 2 --device cuda --precision fp16 --checkpoint $ck \
      --json "$out/cnn3d_128_fp16_$ck.json"
  done
  python3 "$root/experiments/memory/torch_cnn3d.py" step --side 128 --batch 2 | tee "$out/torch_cnn3d_128.jsonl"
}
section_plan() {
  "$ng" plan "${cnn3d_gpu_md[@]}" --set train.batch_size=1 --search resolution \
    2>&1 | tee "$out/plan_cnn3d_search.txt"
  # the plan against a measured GPU run (cuDNN's workspace is the part the plan cannot know)
  "$ng" plan "${cnn3d_gpu_md[@]}" --set train.batch_size=2 --set data.synthetic.side=128 \
    --set precision.compute=fp16 --set model.checkpoint=all --measure --steps 3 2>&1 | tee "$out/plan_cnn3d_128.txt"
  # the CUDA workspace's other users against the plan: K-FAC's cuSOLVER scratch (exact on a GPU),
  # FractalDB's painted device batches
  "$ng" plan --config "$root/experiments/configs/mnist_mlp.yaml" --set data.fallback_synthetic=true \
    --set kfac.enabled=true --set device=cuda --measure --steps 3 2>&1 | tee "$out/plan_mlp_kfac_cuda.txt"
  "$ng" plan --config "$root/experiments/configs/mnist_mlp.yaml" --set data.name=fractal \
    --set data.fractal.side=64 --set data.fractal.patch=3 --set data.augment.crop_pad=0 \
    --set device=cuda --measure --steps 3 \
    2>&1 | tee "$out/plan_mlp_fractal_cuda.txt"
  timeout 240 python3 "$root/experiments/memory/torch_cnn3d.py" largest --batch 1 | tee "$out/torch_cnn3d_largest.jsonl"
  # The largest cube the plan finds with recompute, trained for real (two steps; time and peak).
  side=$(awk '$1 == "f16" && $2 == "recompute" { print $3 }' "$out/plan_cnn3d_search.txt")
  [ -n "$side" ] && timeout 300 "$ng" bench --model cnn3d --img "$side" --batch 1 --device cuda \
    --precision fp16 --checkpoint recompute --steps 2 --json "$out/cnn3d_largest_recompute.json" \
    2>&1 | tee "$out/cnn3d_largest_recompute.txt"
}
section_layers() {
  # Issue 13: fp16 inference per layer on the GPU, and the VGG/NIN image-size sweep.
  "$ng" bench --model vgg --per-layer --batch 256 --device cuda --json "$out/vgg_per_layer.json" \
    2>&1 | tee "$out/vgg_per_layer.txt"
  DEVICE=cuda STEPS=3 timeout 240 bash "$root/experiments/image_size/run.sh" "$build" "$out/image_size" \
    2>&1 | tail -16
}
section_comm() {
  # NCCL on one GPU (one rank): every algorithm degenerates to the identity, but the backend,
  # its stream and the exact checks run.
  "$ng" comm-bench --device cuda --min 4K --max 256M --factor 16 --json "$out/comm_bench_nccl.json" \
    2>&1 | tee "$out/comm-bench.log"
}
section_workers() {
  # Issue 12: the GPU machine's cores as loader workers (FractalDB 224 px rendered on the CPU, its
  # PNG shards decoded), the rate a GPU run gets from the host.
  timeout 120 bash "$root/experiments/data_bench/workers.sh" "$ng" 2>&1 | tee "$out/loader_workers.txt"
}
# Each section in turn, its status and seconds recorded, the results packed after it.
for s in "${sections[@]}"; do
  t0=$(date +%s)
  echo "== $s ($(date -u +%T))"
  "section_$s"
  rc=$?
  printf '{"section": "%s", "exit": %d, "seconds": %d}\n' "$s" "$rc" $(($(date +%s) - t0)) >>"$out/sections.jsonl"
  pack
done
echo "results in $out"
