#!/usr/bin/env bash
# Builds natgrad and runs its tests (all but the `slow` label, so unit, gpu and mpi; NG_TEST_LABELS
# overrides, e.g. NG_TEST_LABELS=gpu on a GPU machine), then the unit, gpu and mpi tests again in
# the CUDA emulation build. GPU tests report "skipped" where no GPU
# is present; mpi tests run under mpirun (np 1-4, CMake sets Open MPI's root and
# oversubscription variables) and report "skipped" in a build without MPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh" "$@"
build=${NG_BUILD_DIR:-$root/build}
status=0
if [ -n "${NG_TEST_LABELS:-}" ]; then
  ctest --test-dir "$build" -L "$NG_TEST_LABELS" --output-on-failure -j2 || status=$?
else
  ctest --test-dir "$build" -LE slow --output-on-failure -j2 || status=$?
fi
# The CUDA emulation build (core/cuda_emu.h): the CUDA build's host code with the CPU twins as
# kernels and device memory unreadable between device ops, so that the unit, gpu and mpi tests
# run every CUDA code path but the kernels on this machine (the mpi ones over an emulated NCCL,
# comm/nccl_emu.c). NG_TEST_EMU=0 leaves it out.
if [ "${NG_TEST_EMU:-1}" != 0 ] && [ -z "${NG_TEST_LABELS:-}" ]; then
  emu=${NG_EMU_BUILD_DIR:-$root/build-emu}
  cmake -S "$root" -B "$emu" -G Ninja -DNG_CUDA_EMU=ON >/dev/null
  ninja -C "$emu"
  ctest --test-dir "$emu" -L 'unit|gpu|mpi' --output-on-failure -j2 || status=$?
fi
exit $status
