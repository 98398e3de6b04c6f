#!/usr/bin/env bash
# Builds natgrad for the CPU with AddressSanitizer + UndefinedBehaviorSanitizer in its own build
# folder (build-asan, or $NG_BUILD_DIR) and runs the test suite (all but `slow`) under them with
# LeakSanitizer on. Any report fails the test that caused it. Extra arguments go to ctest, e.g.
# scripts/sanitize.sh -R fuzz_readers, or -L slow for the long fuzz run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${NG_BUILD_DIR:-$root/build-asan}
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# CPU only, and without MPI, whose libraries keep allocations LeakSanitizer would report.
NG_BUILD_DIR=$build bash "$root/scripts/build.sh" -DNG_CUDA=OFF -DNG_MPI=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS=$flags" \
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"
# allocator_may_return_null: an allocation too large for the host fails as in a plain build (a
# usage error from ng_alloc) rather than ending the program inside ASan.
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:allocator_may_return_null=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=report_objects=1
if [ $# -eq 0 ]; then set -- -LE slow; fi
ctest --test-dir "$build" --output-on-failure -j2 "$@"
