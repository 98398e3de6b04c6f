#!/usr/bin/env bash
# Packs what a GPU session runs into one file that the device tool can carry: natgrad and the
# gpu-labelled test programs of a CUDA build (made here with -DCMAKE_CUDA_ARCHITECTURES=90), with
# every shared library they load that the GPU machine lacks. That machine is bare and offline: it
# has the CUDA toolkit (cuBLAS, cuSOLVER, the runtime) and, in PyTorch's environment, cuDNN and
# NCCL, but none of the Debian libraries natgrad links (OpenBLAS/LAPACKE, oneDNN, libyaml, cJSON,
# libarchive, libspng, OpenMPI's libraries), and a build folder with every test is over the 64 MiB
# a call carries (about 140 MiB; the bundle is about 30 MiB compressed). glibc and the CUDA and
# NVIDIA libraries stay out: the machine's own are used (scripts/gpu-session.sh puts the toolkit's
# and the Python environment's NVIDIA folders on LD_LIBRARY_PATH after the bundle's).
# usage: scripts/gpu-bundle.sh [BUILD_DIR] [OUT_FILE]   (default build-cuda, .gpu/natgrad-gpu.tar.xz)
# then:  device run: bash scripts/gpu-session.sh .gpu/natgrad-gpu.tar.xz   with carry [".gpu"]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-cuda}
out=${2:-$root/.gpu/natgrad-gpu.tar.xz}
[ -x "$build/natgrad" ] || {
  echo "gpu-bundle: no $build/natgrad; build first: NG_BUILD_DIR=$build scripts/build.sh -DCMAKE_CUDA_ARCHITECTURES=90" >&2
  exit 2
}
"$build/natgrad" info 2>/dev/null | grep -qi cuda || {
  echo "gpu-bundle: $build/natgrad was built without CUDA" >&2
  exit 2
}
tests=$(ctest --test-dir "$build" -N -L gpu | awk '/Test +#/ {print $3}')
[ -n "$tests" ] || {
  echo "gpu-bundle: $build has no gpu-labelled tests" >&2
  exit 2
}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in natgrad $tests; do cp "$build/$b" "$stage/bin/"; done
printf '%s\n' $tests >"$stage/bin/gpu-tests.txt"
# glibc's parts, the compiler runtime and everything CUDA/NVIDIA come from the GPU machine.
skip='^(ld-linux.*|linux-vdso.*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libcusolver|libcusparse|libnvJitLink|libcudnn.*|libnccl)\.so'
for b in "$stage"/bin/*; do
  [ "${b##*.}" = txt ] || ldd "$b"
done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | grep -Ev "$skip" |
  while read -r name path; do cp -L "$path" "$stage/lib/$name"; done
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - bin lib | xz -T2 -6 >"$out.tmp"
mv "$out.tmp" "$out"
size=$(stat -c %s "$out")
echo "gpu-bundle: $out, $((size / 1048576)) MiB: natgrad, $(echo $tests | wc -w) gpu tests, $(ls "$stage/lib" | wc -l) libraries"
[ "$size" -lt $((56 * 1048576)) ] || {
  echo "gpu-bundle: over 56 MiB, too close to what a device call carries (64 MiB with the tree)" >&2
  exit 1
}
