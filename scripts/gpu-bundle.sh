#!/usr/bin/env bash
# Packs what a GPU session runs into one file that the device tool can carry: natgrad and the
# gpu-labelled test programs of a CUDA build (made here with -DCMAKE_CUDA_ARCHITECTURES=90), with
# every shared library they load that the GPU machine lacks. That machine is bare and offline: it
# has the CUDA toolkit (cuBLAS, cuSOLVER, the runtime) and, in PyTorch's environment, cuDNN and
# NCCL, but none of the Debian libraries natgrad links (OpenBLAS/LAPACKE, oneDNN, libyaml, cJSON,
# libarchive, libspng, OpenMPI's libraries), and a build folder with every test is over the 64 MiB
# a call carries (about 140 MiB; the bundle is about 30 MiB compressed). glibc and the CUDA and
# NVIDIA libraries stay out: the machine's own are used (the bundle's env.sh, which
# scripts/gpu-session.sh sources, puts the toolkit's and the Python environment's NVIDIA folders on
# LD_LIBRARY_PATH after the bundle's). OpenMPI's run-time travels too (mpirun, its plugins, PMIx's,
# the help texts; see below), relocated into the bundle by env.sh.
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
# The MNIST subset (about 1.6 MiB) the training runs of gpu-session.sh use, so the GPU's runs
# see the digits this machine's do (the device call does not carry ../shared).
for d in "$root/../shared/data/mnist" "$root/datasets/mnist"; do
  if ls "$d"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    mkdir -p "$stage/data/mnist" && cp "$d"/*-ubyte* "$stage/data/mnist/"
    break
  fi
done
# glibc's parts, the compiler runtime and everything CUDA/NVIDIA come from the GPU machine.
skip='^(ld-linux.*|linux-vdso.*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libcusolver|libcusparse|libnvJitLink|libcudnn.*|libnccl)\.so'
# OpenMPI's run-time, which natgrad's libmpi needs beyond its libraries (Debian 12's OpenMPI 4.1.4
# and PMIx 4.2, at their Debian paths): mpirun (orterun; a local launch forks the ranks itself,
# orted is only for remote nodes or a singleton that is not isolated, and is 15 KiB), the MCA
# component plugins libmpi and orterun dlopen, PMIx's three plugins, the help texts and Debian's
# MCA defaults. Plugins for networks a one-node GPU machine does not have (UCX, libfabric/OFI,
# PSM/PSM2, InfiniBand verbs) and OpenSHMEM's are left out, with their libraries (6 MiB before
# compression, and UCX and verbs would want their own plugin folders too): a plugin that needs one
# of those libraries is not copied. env.sh points OpenMPI and PMIx here.
ompi=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3 pmix=/usr/lib/x86_64-linux-gnu/pmix2
if [ ! -d "$ompi" ] || [ ! -x /usr/bin/orterun ]; then
  echo "gpu-bundle: no OpenMPI run-time at $ompi and /usr/bin/orterun (Debian's openmpi-bin)" >&2
  exit 2
fi
cp /usr/bin/orterun /usr/bin/orted "$stage/bin/"
ln -s orterun "$stage/bin/mpirun"
ln -s orterun "$stage/bin/mpiexec"
mkdir -p "$stage/ompi/lib" "$stage/ompi/share/openmpi" "$stage/ompi/etc" "$stage/ompi/pmix/lib" \
  "$stage/ompi/pmix/share"
noplug='^lib(uc[mpst]|fabric|psm|psm2|psm_infinipath|infinipath|ibverbs|rdmacm|efa|oshmem|mca_common_(ucx|ofi|verbs))\.so'
for p in "$ompi"/mca_*.so; do
  ldd "$p" | awk '$2 == "=>" {print $1}' | grep -Eq "$noplug" || cp "$p" "$stage/ompi/lib/"
done
cp "$pmix"/lib/pmix/*.so "$stage/ompi/pmix/lib/"
cp /usr/share/openmpi/help-*.txt "$stage/ompi/share/openmpi/"
cp "$pmix"/share/pmix/help-*.txt "$stage/ompi/pmix/share/"
cp /etc/openmpi/openmpi-mca-params.conf "$stage/ompi/etc/"
# Where a name is not found by ldd it is reported, not copied: the GPU machine would not find it.
for b in "$stage"/bin/* "$stage"/ompi/lib/*.so "$stage"/ompi/pmix/lib/*.so; do
  [ "${b##*.}" = txt ] || [ -L "$b" ] || ldd "$b"
done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3} $3 == "not" {print "gpu-bundle: not found:", $1 > "/dev/stderr"}' |
  sort -u | grep -Ev "$skip" |
  while read -r name path; do cp -L "$path" "$stage/lib/$name"; done
# The environment for all of it in one file, sourced by scripts/gpu-session.sh (and by hand:
# `. /tmp/natgrad-bundle/env.sh`): the bundle's libraries first, then CUDA's and the Python
# environment's NVIDIA ones (cuDNN, NCCL); OpenMPI and PMIx relocated into the bundle.
cat >"$stage/env.sh" <<'ENV'
# . BUNDLE/env.sh -- natgrad's GPU bundle: libraries, mpirun, OpenMPI/PMIx relocation (bash)
NG_BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export NG_BUNDLE
nv=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null)
export LD_LIBRARY_PATH="$NG_BUNDLE/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${nv:+:$nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset nv
export PATH="$NG_BUNDLE/bin:$PATH"
# OpenMPI 4.1 takes its install paths from OPAL_*: the component path follows OPAL_PKGLIBDIR
# (without it MPI_Init and mpirun fail), the help texts OPAL_PKGDATADIR, the MCA defaults
# OPAL_SYSCONFDIR (/etc/openmpi whatever the prefix), orted OPAL_BINDIR (a singleton that is not
# isolated forks it).
export OPAL_PREFIX="$NG_BUNDLE/ompi" OPAL_PKGLIBDIR="$NG_BUNDLE/ompi/lib" OPAL_BINDIR="$NG_BUNDLE/bin" \
  OPAL_PKGDATADIR="$NG_BUNDLE/ompi/share/openmpi" OPAL_SYSCONFDIR="$NG_BUNDLE/ompi/etc"
# PMIx 4.2: Debian sets its plugin folder in a params file that is not here; without the folder
# mpirun still works but complains that the zlib pcompress plugin is unavailable.
export PMIX_PREFIX="$NG_BUNDLE/ompi/pmix" PMIX_PKGLIBDIR="$NG_BUNDLE/ompi/pmix/lib" \
  PMIX_PKGDATADIR="$NG_BUNDLE/ompi/pmix/share" PMIX_MCA_mca_base_component_path="$NG_BUNDLE/ompi/pmix/lib"
# MPI_Init without mpirun (a singleton: test_comm_gpu, comm-bench --device cuda) stays in its
# process instead of forking an orted; mpirun as root, and with more ranks than cores should the
# machine show fewer (binding stays mpirun's default, a core per rank: unbound, 2 ranks on a
# 2-core machine took 2 to 25 ms instead of 4 us for comm-bench's 4 KiB all-reduce).
# The shared-memory transport copies through its buffers, not with process_vm_readv (CMA), which a
# container's seccomp profile commonly refuses ("Read -1, expected ..., errno = 1"); on this
# 2-core machine a 2-rank comm-bench is as fast either way (0.3-0.7 GB/s at 1-16 MiB).
export OMPI_MCA_ess_singleton_isolated=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
ENV
mkdir -p "$(dirname "$out")"
tar -C "$stage" -cf - bin lib ompi env.sh $([ -d "$stage/data" ] && echo data) | xz -T2 -6 >"$out.tmp"
mv "$out.tmp" "$out"
size=$(stat -c %s "$out")
echo "gpu-bundle: $out, $((size / 1048576)) MiB: natgrad, $(echo $tests | wc -w) gpu tests, $(ls "$stage/lib" | wc -l) libraries, mpirun and $(ls "$stage/ompi/lib" | wc -l) OpenMPI plugins$([ -d "$stage/data" ] && echo ", the MNIST subset")"
[ "$size" -lt $((56 * 1048576)) ] || {
  echo "gpu-bundle: over 56 MiB, too close to what a device call carries (64 MiB with the tree)" >&2
  exit 1
}
