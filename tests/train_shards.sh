#!/usr/bin/env bash
# natgrad shards and training from tar shards: a config's data written as shards and read back
# (data.name shards) trains, a run stopped mid-epoch and resumed equals one never stopped bit for
# bit, the same seed gives the same run; bad arguments and broken shards exit 2 naming the option,
# the shard and the member, before a run directory exists.
# usage: train_shards.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"

small_yaml
# 600 train / 200 test synthetic 28x28 examples of about 4.5 KiB each (less noisy than the
# small run's, so 40 steps show learning), in shards of 0.25 MiB.
out=$("$ng" shards --from "$work/small.yaml" --out "$work/sh" --shard-mib 0.25 \
  --set data.synthetic.noise=1.0 2>&1) ||
  bad "natgrad shards failed: $out"
ntrain=$(ls "$work/sh"/train-*.tar 2>/dev/null | wc -l)
ntest=$(ls "$work/sh"/test-*.tar 2>/dev/null | wc -l)
[ "$ntrain" -ge 8 ] && [ "$ntest" -ge 3 ] && ! ls "$work/sh"/*.tmp >/dev/null 2>&1 && ok ||
  bad "natgrad shards wrote $ntrain train and $ntest test shards (want >= 8 and >= 3, no .tmp): $out"
grep -q "wrote 600 training examples in $ntrain shards and 200 test examples in $ntest shards" <<<"$out" &&
  ok || bad "natgrad shards should report what it wrote: $out"
sh=(--set data.name=shards --set data.dir="$work/sh" --set data.shuffle_buffer=64)

"$ng" train --config "$work/small.yaml" --out "$work/a" "${sh[@]}" >/dev/null 2>&1 || bad "training from shards failed"
"$ng" train --config "$work/small.yaml" --out "$work/b" "${sh[@]}" >/dev/null 2>&1
cmp -s "$work/a/final.safetensors" "$work/b/final.safetensors" && ok || bad "same seed, different weights from shards"
# The loss falls: the last 5 steps average below 80% of the first 5 (measured: 2.32 -> 1.67).
read -r first last < <(losses "$work/a" | awk '{ l[NR] = $2 } END {
  for (i = 1; i <= 5; i++) { f += l[i]; t += l[NR - 5 + i] } print f / 5, t / 5 }')
awk -v f="$first" -v t="$last" 'BEGIN { exit !(t < 0.8 * f) }' && ok ||
  bad "loss from shards did not fall: first 5 steps $first, last 5 $last"
# Stop at 15 (mid-epoch), resume: the shard stream is replayed to the same position.
"$ng" train --config "$work/small.yaml" --out "$work/c" "${sh[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
out=$("$ng" train --config "$work/small.yaml" --out "$work/c" "${sh[@]}" --resume auto 2>&1) || bad "resume failed: $out"
cmp -s "$work/a/final.safetensors" "$work/c/final.safetensors" && ok || bad "resumed weights from shards differ"
[ "$(losses "$work/a")" = "$(losses "$work/c")" ] && ok || bad "resumed losses from shards differ"

expect_bad() { # NEEDLE CMD...
  local needle=$1
  shift
  rm -rf "$work/bad"
  local out status
  out=$("$@" 2>&1)
  status=$?
  if [ $status -eq 2 ] && grep -q -- "$needle" <<<"$out" && [ ! -e "$work/bad" ]; then ok; else
    bad "$* -> status $status, want 2 naming '$needle' and no $work/bad: $(head -3 <<<"$out")"
  fi
}
expect_bad "--shard-mib" "$ng" shards --from "$work/small.yaml" --out "$work/bad" --shard-mib 0
expect_bad "--shard-mib" "$ng" shards --from "$work/small.yaml" --out "$work/bad" --shard-mib lots
expect_bad "optimizer.lr" "$ng" shards --from "$work/small.yaml" --out "$work/bad" --set optimizer.lr=-1
expect_bad "already holds shards" "$ng" shards --from "$work/small.yaml" --out "$work/sh"
expect_bad "data.dir" "$ng" train --config "$work/small.yaml" --out "$work/bad" --set data.name=shards \
  --set data.dir="$work/nowhere"
expect_bad "data.shuffle_buffer" "$ng" train --config "$work/small.yaml" --out "$work/bad" "${sh[@]}" \
  --set data.shuffle_buffer=0
# A shard cut short in the middle of a member, and a shard whose label is not a number.
cp -r "$work/sh" "$work/cut"
f=$(ls "$work/cut"/train-*.tar | sed -n 3p)
truncate -s 100000 "$f"
expect_bad "$(basename "$f"): after member" "$ng" train --config "$work/small.yaml" --out "$work/bad" \
  "${sh[@]}" --set data.dir="$work/cut"
rm -rf "$work/cut" && cp -r "$work/sh" "$work/cut"
f=$(ls "$work/cut"/test-*.tar | sed -n 1p)
# the label member of example 7 (each group: npy header + data blocks, then a cls header + block)
off=$(grep -abo '000000007.cls' "$f" | head -1 | cut -d: -f1)
printf 'x' | dd of="$f" bs=1 seek=$((off + 512)) conv=notrunc status=none
expect_bad "member '000000007.cls'" "$ng" train --config "$work/small.yaml" --out "$work/bad" \
  "${sh[@]}" --set data.dir="$work/cut"

# data.skip_bad: the same broken label, and a training shard cut short, are left out and counted
# (stderr and a "data" line of metrics.jsonl), the run trains, and a stopped run resumes exactly.
f=$(ls "$work/cut"/train-*.tar | sed -n 3p)
truncate -s 100000 "$f"
sb=("${sh[@]}" --set data.dir="$work/cut" --set data.skip_bad=true)
out=$("$ng" train --config "$work/small.yaml" --out "$work/sk" "${sb[@]}" 2>&1) || bad "skip_bad run failed: $(tail -3 <<<"$out")"
grep -q "data.skip_bad: left out 1 bad test examples and the rest of 0 shards" <<<"$out" &&
  grep -q "data.skip_bad: left out 0 bad train examples and the rest of 1 shards" <<<"$out" &&
  grep -q "test-000000.tar: member '000000007.cls'" <<<"$out" && ok ||
  bad "skip_bad should say what it left out: $(grep skip_bad <<<"$out")"
grep -q '"type": "data", "step": 0, "split": "test", "examples": 199, "skipped": 1, "cut_shards": 0' "$work/sk/metrics.jsonl" &&
  grep -q '"type": "data", "step": 0, "split": "train", "examples": [0-9]*, "skipped": 0, "cut_shards": 1' "$work/sk/metrics.jsonl" &&
  ok || bad "metrics.jsonl should log the skipped examples: $(grep '"data"' "$work/sk/metrics.jsonl")"
grep -q '"examples": 199' "$work/sk/result.json" && ok || bad "the test set should hold 199 examples: $(cat "$work/sk/result.json")"
"$ng" train --config "$work/small.yaml" --out "$work/sk2" "${sb[@]}" --set train.stop_at_step=15 >/dev/null 2>&1
"$ng" train --config "$work/small.yaml" --out "$work/sk2" "${sb[@]}" --resume auto >/dev/null 2>&1 || bad "skip_bad resume failed"
cmp -s "$work/sk/final.safetensors" "$work/sk2/final.safetensors" && [ "$(losses "$work/sk")" = "$(losses "$work/sk2")" ] &&
  [ "$(grep -c '"type": "data"' "$work/sk2/metrics.jsonl")" -eq 2 ] && ok ||
  bad "a skip_bad run stopped and resumed differs from one never stopped (or lost its data lines)"

# PNG members: FractalDB images (+1/-1) written as 8-bit PNG over [-1, 1] read back as 0/1 images
# and train; PNG refuses volumes and values outside the range, naming the option.
cat >"$work/fr.yaml" <<'YAML'
seed: 5
model: {arch: mlp, width: 32, depth: 1}
data:
  name: fractal
  fractal: {categories: 4, instances: 20, test_instances: 4, side: 16, points: 800}
train: {batch_size: 16, steps: 6, log_every: 1, eval_every: 6}
optimizer: {name: adamw, lr: 0.003}
YAML
out=$("$ng" shards --from "$work/fr.yaml" --out "$work/png" --format png --png-range -1,1 2>&1) ||
  bad "natgrad shards --format png failed: $out"
grep -q "wrote 80 training examples in 1 shards and 16 test examples in 1 shards (.*, png)" <<<"$out" &&
  [ "$(tar -tf "$work/png/train-000000.tar" | grep -c '\.png$')" -eq 80 ] && ok ||
  bad "natgrad shards --format png should write 80 KEY.png members: $out"
out=$("$ng" train --config "$work/fr.yaml" --out "$work/pt" --set data.name=shards --set data.dir="$work/png" 2>&1) &&
  grep -q '"examples": 16' "$work/pt/result.json" && ok || bad "training from PNG shards failed: $(tail -3 <<<"$out")"
expect_bad "--format" "$ng" shards --from "$work/fr.yaml" --out "$work/bad" --format jpeg
expect_bad "--png-range" "$ng" shards --from "$work/fr.yaml" --out "$work/bad" --format png --png-range 1,0
expect_bad "--png-range: example 0 of fractal-train" "$ng" shards --from "$work/fr.yaml" --out "$work/pbad" --format png
[ ! -e "$work/pbad/train-000000.tar" ] && [ ! -e "$work/pbad/train-000000.tar.tmp" ] && ok ||
  bad "a refused PNG write should leave no shard behind"
expect_bad "--format png" "$ng" shards --from "$work/fr.yaml" --out "$work/bad" --format png \
  --set model.arch=cnn3d --set data.name=synthetic3d --set data.synthetic.side=6

# natgrad data-bench: the source, the loader and PNG files, one row each; bad options exit 2.
out=$("$ng" data-bench --from "$work/fr.yaml" --examples 40 --batch 8 --png-dir "$work/files" \
  --png-range -1,1 2>&1) || bad "data-bench failed: $(tail -3 <<<"$out")"
grep -Eq '^source \(this thread\) +40 ' <<<"$out" && grep -Eq '^loader \(batch 8, prefetch [0-9]+, workers [0-9]+\) +40 ' <<<"$out" &&
  grep -Eq '^png files \(this thread\) +40 ' <<<"$out" && [ "$(ls "$work/files" | grep -c '\.png$')" -eq 40 ] && ok ||
  bad "data-bench should time 40 examples three ways and leave 40 PNG files: $out"
out=$("$ng" data-bench --from "$work/small.yaml" --examples 64 --set data.name=shards --set data.dir="$work/sh" 2>&1) &&
  grep -Eq '^loader \(batch 50, prefetch 2, workers 1\) +50 ' <<<"$out" && ok || bad "data-bench over shards failed: $out"
expect_bad "--examples" "$ng" data-bench --from "$work/fr.yaml" --examples 0
expect_bad "--png-range" "$ng" data-bench --from "$work/fr.yaml" --png-dir "$work/files2"
expect_bad "data.fractal.side" "$ng" data-bench --from "$work/fr.yaml" --set data.fractal.side=2
expect_bad "--device gpu" "$ng" data-bench --from "$work/fr.yaml" --device gpu
# --device cuda: refused without a GPU, and for a source that cannot render on one (synthetic).
expect_bad "--device cuda" "$ng" data-bench --from "$work/small.yaml" --device cuda

# A config that describes only data writes shards: its 12 training examples are fewer than the
# default batch of 128, and the warmup would outlast any run of it, but writing trains nothing.
cat >"$work/data_only.yaml" <<'YAML'
seed: 9
data:
  name: synthetic
  synthetic: {train: 12, test: 5, side: 6, channels: 1, classes: 3}
YAML
out=$("$ng" shards --from "$work/data_only.yaml" --out "$work/do" --shard-mib 0.01 \
  --set schedule.warmup_steps=1000 2>&1) &&
  grep -q "wrote 12 training examples in [0-9]* shards and 5 test examples in [0-9]* shards (synthetic 6x6, 3 classes, npy)" <<<"$out" &&
  [ "$(cat "$work/do"/train-*.tar | tar -t --ignore-zeros 2>/dev/null | grep -c '\.npy$')" -eq 12 ] && ok ||
  bad "natgrad shards from a data-only config: $out"
"$ng" train --config "$work/data_only.yaml" --out "$work/do_run" --set data.name=shards --set data.dir="$work/do" \
  --set train.batch_size=4 --set train.steps=2 >/dev/null 2>&1 && [ -f "$work/do_run/result.json" ] && ok ||
  bad "training from the data-only config's shards failed"

# Volumes as npy shards: data-only configs of synthetic 3D volumes (model.arch unset: cnn3d's
# input, 32^3 and 2 classes) and of FractalDB 3D (odd side), read back as [C, D, H, W] members;
# the 3D-CNN trains from the fractal shards for a few steps and evaluates on their test shards.
cat >"$work/vol_only.yaml" <<'YAML'
data:
  name: synthetic3d
  synthetic: {train: 6, test: 2}
YAML
out=$("$ng" shards --from "$work/vol_only.yaml" --out "$work/vs" 2>&1) &&
  grep -q "wrote 6 training examples .* (synthetic 1 x 32^3 volumes, 2 classes, npy)" <<<"$out" &&
  tar -xOf "$work/vs/train-000000.tar" 000000000.npy | head -c 128 | grep -q "'shape': (1, 32, 32, 32)" && ok ||
  bad "natgrad shards of synthetic volumes from a data-only config: $out"
cat >"$work/f3_only.yaml" <<'YAML'
seed: 4
data:
  name: fractal3d
  fractal3d: {categories: 3, instances: 6, test_instances: 2, side: 9, points: 3000}
YAML
out=$("$ng" shards --from "$work/f3_only.yaml" --out "$work/f3s" --shard-mib 0.02 2>&1) &&
  [ "$(ls "$work/f3s"/train-*.tar | wc -l)" -ge 3 ] &&
  tar -xOf "$work/f3s/train-000000.tar" 000000000.npy | head -c 128 | grep -q "'shape': (1, 9, 9, 9)" && ok ||
  bad "natgrad shards of fractal3d volumes: $out"
out=$("$ng" train --config "$work/f3_only.yaml" --out "$work/f3t" --set model.arch=cnn3d --set model.width=4 \
  --set model.depth=2 --set data.name=shards --set data.dir="$work/f3s" --set train.batch_size=6 \
  --set train.steps=3 --set train.eval_every=3 --set optimizer.name=adamw 2>&1) &&
  grep -q "shards from $work/f3s" <<<"$out" && [ "$(losses "$work/f3t" | wc -l)" -gt 0 ] &&
  grep -q '"examples": 6' "$work/f3t/result.json" && ok ||
  bad "cnn3d from fractal3d shards failed: $(tail -3 <<<"$out")"

# Test shards of another shape than the training shards.
"$ng" shards --from "$work/small.yaml" --out "$work/other" --shard-mib 0.25 --set data.synthetic.side=14 \
  >/dev/null 2>&1 || bad "natgrad shards of 14x14 images failed"
rm -rf "$work/mixed" && mkdir "$work/mixed" && cp "$work/sh"/train-*.tar "$work/other"/test-*.tar "$work/mixed"
expect_bad "the test examples" "$ng" train --config "$work/small.yaml" --out "$work/bad" "${sh[@]}" \
  --set data.dir="$work/mixed"

report train_shards
