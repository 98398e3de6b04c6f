#!/usr/bin/env bash
# Installs the Debian 12 packages natgrad builds and tests with, only those missing.
# The CUDA toolkit (with cuDNN and NCCL) is not a Debian package: when /usr/local/cuda/bin/nvcc
# exists the build uses it, otherwise natgrad builds for the CPU alone.
set -euo pipefail
pkgs=(cmake ninja-build gcc g++ make pkg-config git
      libopenblas-dev liblapacke-dev libyaml-dev libcjson-dev zlib1g-dev
      libarchive-dev libspng-dev
      libdnnl-dev # oneDNN: the CPU convolutions, pooling and batch norm
      libopenmpi-dev openmpi-bin clang-format
      iproute2 util-linux # ip, tc and unshare for the namespace cluster (scripts/cluster.sh)
      gcc-aarch64-linux-gnu qemu-user) # the Arm FP16 kernels, tested under qemu (tests/hgemm_cross.sh)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
