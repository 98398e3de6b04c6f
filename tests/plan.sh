#!/usr/bin/env bash
# natgrad plan against real runs: for an MLP with AdamW, one whose build is its peak, LeNet with K-FAC, a checkpointed fp16
# ViT with K-FAC, the 3D-CNN on synthetic volumes (checkpointed; fp16 with K-FAC) and a bf16 VGG
# checkpointed at a list of stages, and the 3D-CNN recomputed, `plan --measure` predicts every memory
# category and the device peak within 10% of what the training steps measure (the arenas are
# planned exactly, so most categories match to the byte). --search finds larger sides with
# checkpointing and in half precision, each within the budget. Training runs report their peaks
# (metrics lines, memory.json). Bad options and checkpoint specs are exit-2 errors naming them.
# usage: plan.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"
small_yaml

# Every category row of the predicted/measured table within 10%, and the device peak. In the CUDA
# emulation build the twins run as CPU code and take none of the CUDA workspace the kernels would
# (the table's " CUDA" row) but cuDNN's and cuSOLVER's, which are emulated (the row's "(cuDNN's N,
# cuSOLVER's M)"): there the workspace row must match with the CUDA row's other users left out.
emulated=0
"$ng" info 2>/dev/null | grep -q '^CUDA: *emulated' && emulated=1
check_measure() { # NAME LOG
  awk -v name="$1" -v emulated="$emulated" '
    /^predicted against measured/ { on = 1; next }
    on && NF == 4 && $2 ~ /^[0-9.]+$/ && $1 != "CUDA" { rows++; cat[rows] = $1; p[rows] = $2; m[rows] = $3 }
    on && $1 == "CUDA" { cuda = $2
      for (i = 3; i < NF; i++) { v = $(i + 1); gsub(/[,)]/, "", v)
        if ($i == "(cuDNN'"'"'s") cudnn = v; if ($i == "cuSOLVER'"'"'s") solver = v } }
    on && /^device peak  / { pk = $3; mk = $4; seen = 1 }
    END {
      for (i = 1; i <= rows; i++) {
        took = cudnn + 0 > solver + 0 ? cudnn + 0 : solver + 0  # what the emulation takes of the CUDA row
        pi = p[i]; if (emulated && cat[i] == "workspace") pi -= cuda - took
        # 10%, or 0.25 MiB for the small ones (the ones columns of K-FAC, a few KiB, are not predicted)
        d = pi - m[i]; if (d < 0) d = -d
        if (d > 0.1 * m[i] && d > 0.25) { print "FAIL: " name ": " cat[i] " predicted " pi " MiB, measured " m[i]; bad = 1 }
      }
      if (seen && (pk < 0.9 * mk || pk > 1.1 * mk)) { print "FAIL: " name ": device peak " pk " vs " mk; bad = 1 }
      if (!seen || rows < 5) { print "FAIL: " name ": no predicted/measured table"; bad = 1 }
      exit bad }' "$2"
}

run_measure() { # NAME SETS...
  local name=$1
  shift
  local args=()
  for s in "$@"; do args+=(--set "$s"); done
  if "$ng" plan --config "$work/small.yaml" "${args[@]}" --measure --steps 2 >"$work/$name.log" 2>&1; then
    check_measure "$name" "$work/$name.log" && ok || bad "$name: $(grep -A12 '^predicted against' "$work/$name.log")"
  else
    bad "$name: plan --measure failed: $(tail -3 "$work/$name.log")"
  fi
}

run_measure mlp_adamw optimizer.name=adamw optimizer.lr=0.001
# a 4096-wide first Linear: the build (its init temporaries beside the weights and gradients)
# is the run's peak, not a training step
run_measure mlp_build_peak data.synthetic.side=64 model.width=256
run_measure lenet_kfac model.arch=lenet kfac.enabled=true train.batch_size=20
# an MLP with K-FAC: on CUDA its factors' eigendecompositions lead the shared workspace
run_measure mlp_kfac kfac.enabled=true model.width=256
run_measure vit_fp16_kfac model.arch=vit model.width=32 model.depth=4 model.heads=2 \
  model.checkpoint="every 1" precision.compute=fp16 kfac.enabled=true train.batch_size=20
run_measure cnn3d_ckpt model.arch=cnn3d model.width=8 model.depth=4 model.checkpoint="every 1" \
  data.name=synthetic3d data.synthetic.side=12 data.synthetic.classes=3 data.synthetic.train=64 \
  data.augment.crop_pad=0 data.augment.hflip=false train.batch_size=4
run_measure cnn3d_recompute model.arch=cnn3d model.width=8 model.depth=4 model.checkpoint=recompute \
  data.name=synthetic3d data.synthetic.side=12 data.synthetic.classes=3 data.synthetic.train=64 \
  data.augment.crop_pad=0 data.augment.hflip=false train.batch_size=4
run_measure cnn3d_kfac_fp16 model.arch=cnn3d model.width=4 model.depth=3 precision.compute=fp16 \
  kfac.enabled=true data.name=synthetic3d data.synthetic.side=8 data.synthetic.classes=3 \
  data.synthetic.train=64 data.augment.crop_pad=0 data.augment.hflip=false train.batch_size=4
run_measure vgg_bf16 model.arch=vgg model.width=8 model.depth=3 model.checkpoint="0,2" \
  precision.compute=bf16 data.synthetic.train=100 train.batch_size=10 data.augment.crop_pad=0

# --search: checkpointing and half precision fit larger inputs; every answer within the budget
"$ng" plan --config "$work/small.yaml" --set model.arch=vit --set model.width=64 --set model.depth=6 \
  --set model.heads=2 --search resolution --budget 2GiB >"$work/search.log" 2>&1 ||
  bad "plan --search failed: $(tail -3 "$work/search.log")"
awk '
  $1 ~ /^(f32|bf16|f16)$/ {
    mode = $2 == "none" ? "none" : $2 == "recompute" ? "rc" : "ck"; side[$1, mode] = $(NF - 1)
    if ($NF > 2.0) { print "FAIL: " $0 " is over the 2 GiB budget"; bad = 1 }
    n++
  }
  END {
    if (n != 9) { print "FAIL: --search printed " n " rows, not 9"; bad = 1 }
    split("f32 bf16 f16", d, " ")
    for (i = 1; i <= 3; i++) {
      if (side[d[i], "ck"] <= side[d[i], "none"]) { print "FAIL: " d[i] ": checkpointed side " side[d[i], "ck"] " not above plain " side[d[i], "none"]; bad = 1 }
      if (side[d[i], "rc"] < side[d[i], "ck"]) { print "FAIL: " d[i] ": recomputed side " side[d[i], "rc"] " below checkpointed " side[d[i], "ck"]; bad = 1 }
    }
    if (side["f16", "none"] <= side["f32", "none"]) { print "FAIL: fp16 side not above fp32"; bad = 1 }
    exit bad
  }' "$work/search.log" && ok || bad "search table: $(cat "$work/search.log")"
"$ng" plan --config "$work/small.yaml" --search batch --budget 64MiB >"$work/batch.log" 2>&1 &&
  grep -q '^f32 .* none ' "$work/batch.log" && ok || bad "plan --search batch: $(tail -3 "$work/batch.log")"

# a training run reports its peaks: in every train line of the metrics and in memory.json
"$ng" train --config "$work/small.yaml" --out "$work/run" --set train.steps=5 >"$work/run.log" 2>&1 ||
  bad "train failed: $(tail -2 "$work/run.log")"
[ "$(grep -c '"type": "train".*"memory_mib": {"other": .*"activations": [0-9.]*.*"device_peak": [0-9.]*}' "$work/run/metrics.jsonl")" -eq 5 ] &&
  ok || bad "metrics lines without memory_mib: $(head -2 "$work/run/metrics.jsonl")"
grep -q '"predicted_mib": {.*"activations": .*"measured_mib": {' "$work/run/memory.json" && ok ||
  bad "memory.json: $(cat "$work/run/memory.json" 2>&1)"
grep -q '^device peak ' "$work/run.log" && ok || bad "no memory table at the end of the run"

# bad input: exit 2, naming what is wrong
expect2() { # WHAT NEEDLE ARGS...
  local what=$1 needle=$2
  shift 2
  "$ng" "$@" >"$work/e.log" 2>&1
  local rc=$?
  [ $rc -eq 2 ] && grep -q -- "$needle" "$work/e.log" && ok || bad "$what: exit $rc: $(tail -2 "$work/e.log")"
}
expect2 "budget" "--budget 12XB" plan --config "$work/small.yaml" --budget 12XB
expect2 "search" "--search depth" plan --config "$work/small.yaml" --search depth
expect2 "ranks" "not a multiple of --ranks 7" plan --config "$work/small.yaml" --ranks 7
expect2 "checkpoint block" "model.checkpoint: block 9 does not exist" plan --config "$work/small.yaml" \
  --set model.arch=vit --set model.depth=4 --set model.checkpoint=0,9
expect2 "checkpoint on mlp" "model.checkpoint: mlp has no blocks" train --config "$work/small.yaml" \
  --out "$work/bad" --set model.checkpoint=all
[ ! -e "$work/bad" ] && ok || bad "a refused run left $work/bad behind"
expect2 "checkpoint spec" "model.checkpoint: 'every 0'" train --config "$work/small.yaml" \
  --out "$work/bad" --set "model.checkpoint=every 0"
report plan
