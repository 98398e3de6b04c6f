#!/usr/bin/env bash
# ng_hgemm's Arm FP16 tile on a CPU this machine does not have: tests/test_hgemm.c built for
# aarch64 (gcc-aarch64-linux-gnu, static) and run under qemu-aarch64 twice: `-cpu max` (FP16
# arithmetic: the run-time choice must be "asimdhp", its tile held to the scalar model's bits,
# the model's fma16 to the emulated CPU's fmadd h) and `-cpu cortex-a57` (ARMv8.0, no FP16: the
# choice must be "none", the model alone). Exits 77 (skipped) without the cross compiler or qemu.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${NG_CROSS_CC:-aarch64-linux-gnu-gcc}
qemu=${NG_QEMU:-qemu-aarch64}
if ! command -v "$cc" >/dev/null || ! command -v "$qemu" >/dev/null; then
  echo "hgemm_cross: skipped, needs $cc and $qemu (Debian: gcc-aarch64-linux-gnu qemu-user)"
  exit 77
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# armv8-a as the baseline, as a distribution builds: the FP16 tile is a function target
"$cc" -std=gnu11 -O2 -Wall -Wextra -Werror -ffp-contract=off -fopenmp -march=armv8-a -static \
  -I"$root" -I"$root/core" -I"$root/tests" -o "$out/test_hgemm" \
  "$root/tests/test_hgemm.c" "$root/tests/testing_base.c" "$root/core/error.c" \
  "$root/core/hgemm.c" "$root/core/hgemm_arm.c" "$root/core/hgemm_x86.c" -lm
echo "== qemu-aarch64 -cpu max (FP16 arithmetic)"
NG_HGEMM_EXPECT=asimdhp OMP_NUM_THREADS=3 "$qemu" -cpu max "$out/test_hgemm"
echo "== qemu-aarch64 -cpu cortex-a57 (no FP16)"
NG_HGEMM_EXPECT=none OMP_NUM_THREADS=3 "$qemu" -cpu cortex-a57 "$out/test_hgemm"
