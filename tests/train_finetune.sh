#!/usr/bin/env bash
# Fine-tuning from a pre-trained run (model.init, model.init_skip): a run for 4 classes starts from
# a 10-class run's weights with its own head, learns from there (its first loss is not a fresh
# model's), and every wrong use exits 2 naming the key or tensor before a run directory exists.
# usage: train_finetune.sh PATH/TO/natgrad
set -u
ng=$1
source "$(dirname "$0")/train_lib.sh"
small_yaml

out=$("$ng" train --config "$work/small.yaml" --out "$work/pre" --set train.steps=20 2>&1) ||
  bad "pre-training failed: $(tail -3 <<<"$out")"
pre=$work/pre/final.safetensors
four=(--set data.synthetic.classes=4 --set train.steps=5)

out=$("$ng" train --config "$work/small.yaml" --out "$work/fine" "${four[@]}" \
  --set model.init="$pre" --set model.init_skip=head 2>&1) || bad "fine-tuning failed: $(tail -3 <<<"$out")"
grep -q "initialised 4 of 6 tensors from $pre" <<<"$out" && ok ||
  bad "the run should say what it loaded: $(grep -i init <<<"$out")"
"$ng" train --config "$work/small.yaml" --out "$work/scratch" "${four[@]}" >/dev/null 2>&1 ||
  bad "the run from scratch failed"
first() { losses "$1" | head -1 | cut -d' ' -f2; }
[ "$(first "$work/fine")" != "$(first "$work/scratch")" ] && ok ||
  bad "fine-tuning started where a fresh model does (loss $(first "$work/fine"))"
# A resumed fine-tuning run takes its weights from its checkpoint, not from model.init again.
"$ng" train --config "$work/small.yaml" --out "$work/fine2" "${four[@]}" --set model.init="$pre" \
  --set model.init_skip=head --set train.stop_at_step=3 >/dev/null 2>&1 || bad "stopped run failed"
"$ng" train --config "$work/small.yaml" --out "$work/fine2" "${four[@]}" --set model.init="$pre" \
  --set model.init_skip=head --resume auto >/dev/null 2>&1 || bad "resumed run failed"
cmp -s "$work/fine/final.safetensors" "$work/fine2/final.safetensors" && ok ||
  bad "a stopped and resumed fine-tuning run differs from an uninterrupted one"

expect_bad_train "$work/small.yaml" "head.weight" "${four[@]}" --set model.init="$pre"
expect_bad_train "$work/small.yaml" "$work/nothing.safetensors" --set model.init="$work/nothing.safetensors"
expect_bad_train "$work/small.yaml" "model.init_skip" --set model.init_skip=head
expect_bad_train "$work/small.yaml" "model.init_skip: 'heads'" --set model.init="$pre" \
  --set model.init_skip=heads
expect_bad_train "$work/small.yaml" "model.init_skip" --set model.init="$pre" --set model.init_skip=head,,x
echo "not safetensors" >"$work/junk.safetensors"
expect_bad_train "$work/small.yaml" "junk.safetensors" --set model.init="$work/junk.safetensors"

report train_finetune
