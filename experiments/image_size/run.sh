#!/usr/bin/env bash
# Training iterations per minute and peak memory of VGG and NIN by image side (batch fixed), on the
# CPU or a GPU: for each size `natgrad plan` predicts the peak; a size that would not fit the
# budget runs with every block a checkpoint segment (model.checkpoint all), else with every block
# recomputed (recompute), and one that would not fit even so is reported, not run. Each run is `natgrad bench` (forward + loss + backward,
# median of STEPS after a warm-up step). Writes OUT/results.md and, with matplotlib,
# OUT/image_size.png.
# usage: experiments/image_size/run.sh [BUILD_DIR] [OUT_DIR]
# Environment: DEVICE (cpu), MODELS ("vgg nin"), SIDES ("32 64 128 256 512 1024"), BATCH (8),
# STEPS (3), BUDGET (16GiB on the CPU, the device's memory on a GPU).
# PYTHON (python3; one with matplotlib draws the plot).
set -euo pipefail
# OpenMP's threads spin while OpenBLAS's work on the same cores unless told to sleep: passive
# waiting keeps the two pools from stealing each other's time (docs/BENCHMARKS.md, CPU speed).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# OpenBLAS's idle workers spin likewise between GEMMs unless this is small (README, Threads).
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
here=$(cd "$(dirname "$0")" && pwd)
ng=${1:-$here/../../build}/natgrad
out=${2:-$here/../../runs/image_size}
dev=${DEVICE:-cpu} batch=${BATCH:-8} steps=${STEPS:-3}
budget=${BUDGET:-$([ "$dev" = cpu ] && echo 16GiB || echo "")}
mkdir -p "$out"
rows=$out/rows.tsv
: >"$rows"
for model in ${MODELS:-vgg nin}; do
  for side in ${SIDES:-32 64 128 256 512 1024}; do
    # Synthetic data of the side, only as many examples as one batch: plan reads the config's data.
    args=(--set model.arch="$model" --set data.name=synthetic --set data.synthetic.side="$side"
      --set data.synthetic.channels=3 --set data.synthetic.train="$batch"
      --set data.synthetic.test="$batch" --set train.batch_size="$batch" --device "$dev")
    [ -n "$budget" ] && args+=(--budget "$budget")
    mode=
    for ck in none all recompute; do
      p=$("$ng" plan "${args[@]}" --set model.checkpoint=$ck 2>&1) || { echo "$p" >&2; exit 1; }
      if grep -q "^fits .*: yes" <<<"$p"; then
        mode=$ck
        predicted=$(awk '/^device peak/ { print $3 }' <<<"$p")
        break
      fi
    done
    if [ -z "$mode" ]; then
      printf '%s\t%s\t%s\t-\t-\t-\t-\t-\n' "$model" "$side" "$batch" >>"$rows"
      echo "$model $side: does not fit $budget even with checkpointing"
      continue
    fi
    j=$out/${model}_${side}.json
    "$ng" bench --model "$model" --img "$side" --batch "$batch" --steps "$steps" --device "$dev" \
      --checkpoint "$mode" --json "$j" >"$out/${model}_${side}.txt"
    python3 - "$j" "$side" "$mode" "$predicted" >>"$rows" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ms = r["ms_per_step"]
print("\t".join([r["model"], sys.argv[2], str(r["batch"]), sys.argv[3], f"{ms:.1f}",
                 f"{60000 / ms:.2f}", f"{r['peak_bytes'] / 2**20:.1f}", sys.argv[4]]))
PY
    tail -1 "$rows"
  done
done
"${PYTHON:-python3}" "$here/summarize.py" "$rows" "$out" "$dev"
