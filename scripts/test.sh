#!/usr/bin/env bash
# Builds natgrad and runs its tests (all but the `slow` label; NG_TEST_LABELS overrides, e.g.
# NG_TEST_LABELS=gpu on a GPU machine). GPU tests report "skipped" where no GPU is present.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh" "$@"
build=${NG_BUILD_DIR:-$root/build}
if [ -n "${NG_TEST_LABELS:-}" ]; then
  ctest --test-dir "$build" -L "$NG_TEST_LABELS" --output-on-failure -j2
else
  ctest --test-dir "$build" -LE slow --output-on-failure -j2
fi
