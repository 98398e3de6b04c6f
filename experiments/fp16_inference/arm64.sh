#!/usr/bin/env bash
# natgrad's fp16 evaluation on an Arm CPU with FP16 arithmetic, emulated: natgrad cross-built for
# aarch64 (CPU only, no MPI, against Debian's arm64 libraries installed side by side) and
# `natgrad eval --set precision.compute=fp16` of the models experiments/fp16_inference/run.sh
# trained, run under qemu-aarch64 -cpu max, where ng_hgemm chooses its Arm FP16 tile. Each eval
# line's loss and accuracy must equal, to every digit printed, the x86 build's under
# NG_F16_NATIVE=model (the scalar model with the tile's bits): the whole fp16 evaluation, not only
# the GEMM, gives the same bits on the emulated Arm CPU. Also shows the run-time choice: `natgrad
# info` says "arithmetic asimdhp" under -cpu max and "none" under -cpu cortex-a57 (ARMv8.0).
# qemu checks bits, not speed: its fp16 instructions are software.
# usage: experiments/fp16_inference/arm64.sh [X86_BUILD_DIR] [RUNS_DIR] [ARM_BUILD_DIR]
# Needs (Debian 12): dpkg --add-architecture arm64; apt-get install gcc-aarch64-linux-gnu
#   g++-aarch64-linux-gnu qemu-user libopenblas-dev:arm64 liblapacke-dev:arm64 libyaml-dev:arm64
#   libcjson-dev:arm64 zlib1g-dev:arm64 libarchive-dev:arm64 libspng-dev:arm64 libdnnl2:arm64.
#   libdnnl-dev:arm64 cannot sit beside the amd64 one (their dnnl_config.h differ): the script
#   unpacks its headers into the build folder (apt-get download, dpkg-deb -x).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
x86=${1:-$root/build}/natgrad
runs=${2:-$root/runs/fp16_inference}
arm=${3:-$root/build-arm64}
mkdir -p "$arm"
if [ ! -f "$arm/dnnl-dev/usr/include/oneapi/dnnl/dnnl.h" ]; then
  (cd "$arm" && apt-get download libdnnl-dev:arm64 >/dev/null && dpkg-deb -x libdnnl-dev_*_arm64.deb dnnl-dev)
fi
cmake -S "$root" -B "$arm" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNG_CUDA=OFF -DNG_MPI=OFF \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DCMAKE_LIBRARY_ARCHITECTURE=aarch64-linux-gnu \
  -DDNNL_INCLUDE_DIR="$arm/dnnl-dev/usr/include" \
  -DDNNL_LIBRARY=/usr/lib/aarch64-linux-gnu/libdnnl.so.2 >/dev/null
ninja -C "$arm" natgrad >/dev/null
run_arm() { qemu-aarch64 -cpu "$@"; }
echo "== natgrad info under qemu-aarch64"
echo "-cpu max:         $(run_arm max "$arm/natgrad" info | grep '^fp16:')"
echo "-cpu cortex-a57:  $(run_arm cortex-a57 "$arm/natgrad" info | grep '^fp16:')"
fields() { grep '"type": "eval"' | grep -o '"\(loss\|accuracy\|precision\)": [^,}]*' | tr '\n' ' '; }
status=0
for run in "$runs"/*-s*/; do
  run=${run%/}
  [ -f "$run/final.safetensors" ] || continue
  args=(eval --config "$run/config.yaml" --weights "$run/final.safetensors"
    --set precision.compute=fp16)
  model=$(NG_F16_NATIVE=model "$x86" "${args[@]}" 2>/dev/null | fields)
  start=$(date +%s)
  tile=$(run_arm max "$arm/natgrad" "${args[@]}" 2>/dev/null | fields)
  secs=$(($(date +%s) - start))
  if [ -n "$tile" ] && [ "$tile" = "$model" ]; then
    echo "$(basename "$run"): same ($tile; ${secs} s under qemu)"
  else
    echo "$(basename "$run"): DIFFERENT: x86 model [$model], arm64 tile [$tile]"
    status=1
  fi
done
exit $status
