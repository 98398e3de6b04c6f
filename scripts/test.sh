#!/usr/bin/env bash
# Builds natgrad and runs its tests (all but the `slow` label, so unit, gpu and mpi; NG_TEST_LABELS
# overrides, e.g. NG_TEST_LABELS=gpu on a GPU machine). GPU tests report "skipped" where no GPU
# is present; mpi tests run under mpirun (np 1-4, CMake sets Open MPI's root and
# oversubscription variables) and report "skipped" in a build without MPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh" "$@"
build=${NG_BUILD_DIR:-$root/build}
if [ -n "${NG_TEST_LABELS:-}" ]; then
  ctest --test-dir "$build" -L "$NG_TEST_LABELS" --output-on-failure -j2
else
  ctest --test-dir "$build" -LE slow --output-on-failure -j2
fi
