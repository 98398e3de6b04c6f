#!/usr/bin/env bash
# Activation memory with and without checkpointing (natgrad bench, measured) for the 3D-CNN and a
# ViT on the CPU, as a markdown table for docs/BENCHMARKS.md.
# usage: experiments/memory/cpu.sh [BUILD_DIR]
set -euo pipefail
ng=${1:-build}/natgrad
printf '| model | input | batch | dtype | checkpoint | activations MiB | scratch MiB | device peak MiB |\n'
printf '|---|---|---|---|---|---|---|---|\n'
row() { # MODEL IMG BATCH PRECISION SPEC
  local j
  j=$(mktemp)
  "$ng" bench --model "$1" --img "$2" --batch "$3" --precision "$4" --checkpoint "$5" --steps 1 \
    --device cpu --json "$j" >/dev/null
  python3 - "$j" "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
mib = lambda b: b / 2**20
side = sys.argv[3] + ("^3" if r["model"] == "cnn3d" else "^2")
print(f"| {r['model']} | {side} | {r['batch']} | {r['dtype']} | {r['checkpoint']} | "
      f"{mib(r['activation_bytes']):.1f} | {mib(r['scratch_bytes']):.1f} | "
      f"{mib(r['peak_bytes']):.1f} |")
PY
  rm -f "$j"
}
for spec in none "every 2" "every 1" recompute; do row cnn3d 32 2 fp32 "$spec"; done
row cnn3d 32 2 bf16 "every 1"
row cnn3d 32 2 bf16 recompute
for spec in none "every 3" "every 1"; do row vit_tiny_patch4_32 32 64 fp32 "$spec"; done
row vit_tiny_patch4_32 32 64 bf16 "every 1"
