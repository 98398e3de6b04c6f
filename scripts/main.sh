#!/usr/bin/env bash
# Builds natgrad and runs the main job. Until the trainer lands this is the core smoke check:
# what the build contains, then GEMM and eigh against float64 on every device present.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh" "$@"
build=${NG_BUILD_DIR:-$root/build}
"$build/natgrad" info
"$build/natgrad" smoke
