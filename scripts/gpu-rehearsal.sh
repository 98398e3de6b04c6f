#!/usr/bin/env bash
# Rehearses the GPU session on this machine: the CUDA emulation build (docs/ARCHITECTURE.md,
# "Tests") packed into a bundle as scripts/gpu-bundle.sh packs the real one, then
# scripts/gpu-session.sh run on it as the device call would run it, for the sections whose sizes
# a CPU can take (tests train comm fractal workers core: about 12 minutes on 2 cores; peer, cnn3d,
# plan and layers use a GPU's sizes). What it shows: the script, the bundle's mpirun and
# libraries, every CUDA host path those sections take at the session's own sizes, and that the
# results come back (results.tgz under the 16 MiB a device call returns a file with). What it
# cannot show: anything of the kernels, cuBLAS, cuSOLVER, cuDNN or NCCL themselves.
# usage: scripts/gpu-rehearsal.sh [SECTION ...]   (results in ./gpu-rehearsal/results.tgz)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
emu=${NG_EMU_BUILD_DIR:-$root/build-emu}
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(tests train comm fractal workers core)
cmake -S "$root" -B "$emu" -G Ninja -DNG_CUDA_EMU=ON >/dev/null
ninja -C "$emu"
dest=$root/gpu-rehearsal
rm -rf "$dest" /tmp/gpu-results && mkdir -p "$dest"
bash "$root/scripts/gpu-bundle.sh" "$emu" "$dest/natgrad-emu.tar.xz"
OUT=$dest bash "$root/scripts/gpu-session.sh" "$dest/natgrad-emu.tar.xz" "${sections[@]}" 2>&1 |
  tee "$dest/session.log"
size=$(stat -c %s "$dest/results.tgz")
echo "gpu-rehearsal: results.tgz $((size / 1024)) KiB (a device call returns files up to 16 MiB);" \
  "sections: $(tar -xzOf "$dest/results.tgz" ./sections.jsonl | tr '\n' ' ')"
[ "$size" -lt $((16 * 1048576)) ] || {
  echo "gpu-rehearsal: results.tgz is over 16 MiB: it would not come back from the device" >&2
  exit 1
}
# a gpu test program that failed (77 is a skip)
if tar -xzOf "$dest/results.tgz" ./gpu-tests.log 2>/dev/null | grep -E ': exit ([1-9]|[1-9][0-9]+) ' |
  grep -v ': exit 77 '; then
  echo "gpu-rehearsal: a gpu test program failed (above)" >&2
  exit 1
fi
if tar -xzOf "$dest/results.tgz" ./sections.jsonl | grep -v '"exit": 0' >/dev/null; then
  echo "gpu-rehearsal: a section exited non-zero (sections.jsonl above)" >&2
  exit 1
fi
