#!/usr/bin/env bash
# Installs what is missing, configures and builds natgrad into ./build (or $NG_BUILD_DIR).
# CUDA is used when nvcc is found (PATH or /usr/local/cuda); pass extra CMake flags as arguments,
# e.g. scripts/build.sh -DNG_CUDA=OFF or -DCMAKE_CUDA_ARCHITECTURES=90.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/install-deps.sh"
build=${NG_BUILD_DIR:-$root/build}
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
cmake -S "$root" -B "$build" -G Ninja "$@" >/dev/null
ninja -C "$build"
