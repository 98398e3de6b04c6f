#!/usr/bin/env bash
# Builds natgrad for the CPU with AddressSanitizer + UndefinedBehaviorSanitizer in its own build
# folder (build-asan, or $NG_BUILD_DIR) and runs the test suite (all but `slow`) under them with
# LeakSanitizer on. Any report fails the test that caused it. Extra arguments go to ctest, e.g.
# scripts/sanitize.sh -R fuzz_readers, or -L slow for the long fuzz run.
# NG_SANITIZE_MPI=1: an MPI build instead (build-asan-mpi) running the mpi-labelled tests (the
# communicator, buckets, distributed K-FAC, data-parallel training), with LeakSanitizer off:
# Open MPI keeps allocations of its own until exit.
# NG_SANITIZE_EMU=1: the CUDA emulation build (build-asan-emu, no MPI) running the unit and gpu
# tests, so the emulated runtime, cuBLAS, cuSOLVER and cuDNN and the bindings that call them run
# under the sanitizers too (the toolkit's headers are needed, as for any emulation build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mpi=${NG_SANITIZE_MPI:-0}
emu=${NG_SANITIZE_EMU:-0}
if [ "$mpi" = 1 ]; then
  build=${NG_BUILD_DIR:-$root/build-asan-mpi}
elif [ "$emu" = 1 ]; then
  build=${NG_BUILD_DIR:-$root/build-asan-emu}
else
  build=${NG_BUILD_DIR:-$root/build-asan}
fi
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# CPU only (or the emulated device), and without MPI, whose libraries keep allocations
# LeakSanitizer would report.
NG_BUILD_DIR=$build bash "$root/scripts/build.sh" -DNG_CUDA=OFF "-DNG_CUDA_EMU=$([ "$emu" = 1 ] && echo ON || echo OFF)" \
  "-DNG_MPI=$([ "$mpi" = 1 ] && echo ON || echo OFF)" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS=$flags" \
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"
# allocator_may_return_null: an allocation too large for the host fails as in a plain build (a
# usage error from ng_alloc) rather than ending the program inside ASan.
leaks=$([ "$mpi" = 1 ] && echo 0 || echo 1)
export ASAN_OPTIONS=detect_leaks=$leaks:halt_on_error=1:allocator_may_return_null=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=report_objects=1
if [ $# -eq 0 ]; then
  if [ "$mpi" = 1 ]; then
    set -- -L mpi
  elif [ "$emu" = 1 ]; then
    set -- -L 'unit|gpu' -LE slow
  else
    set -- -LE slow
  fi
fi
ctest --test-dir "$build" --output-on-failure -j2 "$@"
