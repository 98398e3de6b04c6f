#!/usr/bin/env bash
# Mixed precision in natgrad train: fp16 and bf16 runs follow the fp32 run's losses within what
# their formats allow; a loss scale too large for fp16 makes the first steps overflow, and each
# of them is skipped (logged, the scale halved) until the run trains; a stopped fp16 run resumes
# bit-exactly (the loss scale is in the checkpoint); K-FAC under fp16 follows fp32 K-FAC (the
# scale is divided out of G); bad settings are exit-2 errors naming the key.
# With --mnist DIR (the slow variant): the main job's MLP on MNIST in fp16 and bf16 ends within
# 0.5% test accuracy of fp32 with the same seed.
# usage: train_precision.sh PATH/TO/natgrad [--mnist DIR]
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"
small_yaml
acc() { sed -n 's/^test accuracy \([0-9.]*\)%.*/\1/p' "$1"; }

if [ "${2:-}" = --mnist ]; then
  [ -f "$3/train-images-idx3-ubyte.gz" ] || [ -f "$3/train-images-idx3-ubyte" ] || { echo "no MNIST in $3"; exit 77; }
  cfg=$(dirname "$0")/../experiments/configs/mnist_mlp.yaml
  for p in fp32 fp16 bf16; do
    "$ng" train --config "$cfg" --out "$work/m$p" --set precision.compute=$p --set data.dir="$3" \
      >"$work/m$p.log" 2>&1 || bad "MNIST $p run failed: $(tail -2 "$work/m$p.log")"
  done
  a32=$(acc "$work/mfp32.log")
  for p in fp16 bf16; do
    a=$(acc "$work/m$p.log")
    awk -v a="$a" -v b="$a32" 'BEGIN { d = a - b; exit !(a != "" && (d < 0 ? -d : d) <= 0.5) }' && ok ||
      bad "MNIST $p test accuracy $a% is not within 0.5% of fp32's $a32%"
    echo "MNIST MLP: $p $a%, fp32 $a32%"
  done
  report train_precision_mnist
  exit
fi

# Largest relative difference of the logged losses of two runs.
maxrel() {
  paste <(losses "$work/$1") <(losses "$work/$2") | awk '
    { d = $2 - $4; d = d < 0 ? -d : d; r = d / $2; if (r > m) m = r; n++ }
    END { if (n == 0) print "inf"; else printf "%.3g\n", m }'
}
within() { awk -v r="$1" -v t="$2" 'BEGIN { exit !(r != "inf" && r <= t) }'; }
"$ng" train --config "$work/small.yaml" --out "$work/f32" >/dev/null 2>&1 || bad "fp32 run failed"
# Over 40 steps the weights drift apart by rounding; fp16 keeps 11 bits, bf16 8: a few percent
# of the loss for bf16 is rounding, not a bug (an unscaled or doubly scaled gradient is off by
# orders of magnitude, a wrong compute copy by the whole learning progress).
for p in "fp16 0.02" "bf16 0.05"; do
  set -- $p
  "$ng" train --config "$work/small.yaml" --out "$work/$1" --set precision.compute=$1 >"$work/$1.log" 2>&1 || bad "$1 run failed: $(tail -2 "$work/$1.log")"
  r=$(maxrel f32 "$1")
  within "$r" "$2" && ok || bad "$1 losses differ from fp32 by $r (more than $2)"
  grep '"type": "train"' "$work/$1/metrics.jsonl" | tail -1 | grep -q '"skipped_total": 0,' && ok || bad "$1 skipped steps"
done
grep -q '"loss_scale": 65536,' "$work/fp16/metrics.jsonl" && ok || bad "fp16 does not log its loss scale"
grep -q '"loss_scale": 1,' "$work/bf16/metrics.jsonl" && ok || bad "bf16 logs a loss scale other than 1"

# A scale of 2^24: the first backward passes overflow fp16 and are skipped, halving the scale.
"$ng" train --config "$work/small.yaml" --out "$work/ovf" --set precision.compute=fp16 \
  --set precision.init_scale=16777216 >"$work/ovf.log" 2>&1 || bad "overflowing fp16 run failed: $(tail -2 "$work/ovf.log")"
grep -q '"step": 1,.*"loss_scale": 16777216, "skipped": 1,' "$work/ovf/metrics.jsonl" && ok || bad "step 1 at scale 2^24 was not skipped"
grep -q '"step": 2,.*"loss_scale": 8388608,' "$work/ovf/metrics.jsonl" && ok || bad "the scale was not halved after the overflow"
last=$(grep '"type": "train"' "$work/ovf/metrics.jsonl" | tail -1)
grep -q '"skipped": 0,' <<<"$last" && ok || bad "the run still skips at its end: $last"

# Stop at step 15 and resume: the bits of the uninterrupted fp16 run (growth every 4 steps, so
# the scale changes across the checkpoint).
G=(--set precision.compute=fp16 --set precision.growth_interval=4 --set precision.init_scale=1024)
"$ng" train --config "$work/small.yaml" --out "$work/g" "${G[@]}" >/dev/null 2>&1 || bad "fp16 growth run failed"
"$ng" train --config "$work/small.yaml" --out "$work/gs" "${G[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
"$ng" train --config "$work/small.yaml" --out "$work/gs" "${G[@]}" --set train.stop_at_step=15 --resume auto >/dev/null 2>&1 || bad "fp16 resume failed"
cmp -s "$work/g/final.safetensors" "$work/gs/final.safetensors" && ok || bad "fp16 stop + resume is not bit-exact"
grep -q '"loss_scale": 2048,' "$work/g/metrics.jsonl" && ok || bad "the loss scale never grew"

# K-FAC in fp16 against K-FAC in fp32.
K=(--set kfac.enabled=true --set kfac.factor_every=1 --set kfac.inv_every=5 --set kfac.damping=0.03 --set optimizer.lr=0.01)
"$ng" train --config "$work/small.yaml" --out "$work/k32" "${K[@]}" >/dev/null 2>&1 || bad "fp32 K-FAC failed"
"$ng" train --config "$work/small.yaml" --out "$work/k16" "${K[@]}" --set precision.compute=fp16 >"$work/k16.log" 2>&1 || bad "fp16 K-FAC failed: $(tail -2 "$work/k16.log")"
r=$(maxrel k32 k16)
within "$r" 0.02 && ok || bad "fp16 K-FAC losses differ from fp32 K-FAC by $r"

# Errors.
out=$("$ng" train --config "$work/small.yaml" --out "$work/e1" --set precision.compute=fp8 2>&1)
[ $? -eq 2 ] && grep -q "precision.compute" <<<"$out" && ok || bad "precision.compute=fp8: $out"
out=$("$ng" train --config "$work/small.yaml" --out "$work/e2" --set precision.compute=bf16 --set kfac.enabled=true --set kfac.fisher=true 2>&1)
[ $? -eq 2 ] && grep -q "kfac.fisher" <<<"$out" && ok || bad "true Fisher in bf16: $out"
out=$("$ng" train --config "$work/small.yaml" --out "$work/e3" --set precision.compute=fp16 --set precision.backoff_factor=1.5 2>&1)
[ $? -eq 2 ] && grep -q "precision.backoff_factor" <<<"$out" && ok || bad "backoff 1.5: $out"
[ ! -e "$work/e1" ] && [ ! -e "$work/e2" ] && [ ! -e "$work/e3" ] && ok || bad "a refused run left its directory"
report train_precision
