#!/usr/bin/env bash
# The natgrad command line: exit statuses and messages for good and bad invocations.
# usage: cli.sh PATH/TO/natgrad
set -u
ng=$1
pass=0 fail=0
expect() { # expect STATUS NEEDLE -- ARGS...: runs natgrad ARGS, checks status and stderr/stdout
  local want=$1 needle=$2
  shift 3
  local out status
  out=$("$ng" "$@" 2>&1)
  status=$?
  if [ "$status" -eq "$want" ] && { [ -z "$needle" ] || grep -q -- "$needle" <<<"$out"; }; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: natgrad $* -> status $status (want $want), output should contain '$needle':"
    echo "$out" | head -5
  fi
}
expect 2 "usage" -- 
expect 0 "commands" -- --help
expect 2 "unknown command 'frobnicate'" -- frobnicate
expect 0 "BLAS" -- info
NG_THREADS=3 expect 0 "Threads:   3 (NG_THREADS" -- info
NG_THREADS=abc expect 2 "NG_THREADS is 'abc'" -- info
NG_THREADS=0 expect 2 "NG_THREADS is '0'; a thread count from 1 to 1024" -- info
expect 0 "all checks passed" -- smoke
expect 2 "--reps" -- bench-core --reps 0
expect 2 "--device" -- bench-core --device tpu
expect 2 "--gemm" -- bench-core --gemm 12,x
expect 2 "--img" -- bench --model vit --img 99999999999
expect 2 "--arena-mib" -- bench --model mlp --arena-mib 17592186044416
expect 2 "--batch" -- bench --model mlp --batch 4611686018427387904
expect 2 "gemm" -- bench-core --device cpu --gemm 4294967296 --reps 1
expect 0 "gemm" -- bench-core --device cpu --gemm 64 --eigh 32 --reps 1
expect 2 "not with --per-layer" -- bench --model mlp --per-layer --checkpoint all
cfg="$(cd "$(dirname "$0")/.." && pwd)/experiments/configs/mnist_mlp.yaml"
expect 2 "not with --config" -- bench --config "$cfg" --model lenet --per-layer
expect 2 "nothing.yaml" -- bench --config /nonexistent/nothing.yaml --per-layer
expect 0 "mlp, batch 2" -- bench --config "$cfg" --per-layer --batch 2 --steps 1 --device cpu
expect 2 "--precision" -- bench --model mlp --per-layer --precision fp8
# bench --step: a config's whole training step, its optimizer chain included.
expect 2 "needs --config" -- bench --model mlp --step
expect 2 "--set" -- bench --config "$cfg" --step --set kfac.enabled
expect 2 "kfac.factor_every" -- bench --config "$cfg" --step --set kfac.enabled=true --set kfac.factor_every=0
st=$(mktemp)
expect 0 "optimizer kfac+sgd" -- bench --config "$cfg" --step --set kfac.enabled=true \
  --set kfac.factor_every=2 --set kfac.inv_every=4 --batch 8 --steps 5 --device cpu --json "$st"
grep -q '"optimizer": "kfac+sgd", "steps": 5, "ms_per_step": [0-9.]*, "mean_ms_per_step": [0-9.]*' "$st" &&
  pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: bench --step json: $(cat "$st")"; }
rm -f "$st"
# The per-layer report adds up: the layers' FLOPs are the model's, half bytes are half of fp32's.
pl=$(mktemp)
expect 0 "sum of layers" -- bench --model lenet --per-layer --batch 4 --steps 1 --device cpu --json "$pl"
if command -v python3 >/dev/null; then
  if python3 - "$pl" <<'PY'; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: per-layer json"; fi
import json, sys
r = json.load(open(sys.argv[1]))
L = r["layers"]
assert len(L) > 5 and sum(l["flops"] for l in L) == r["model_flops"], "flops do not add up"
assert all(l["bytes"][0] == 2 * l["bytes"][1] for l in L), "half bytes"
assert all(min(l["ms"]) >= 0 for l in L) and r["model_ms"][0] > 0
assert r["fp16_arithmetic"] in ("none", "asimdhp", "avx512fp16"), r["fp16_arithmetic"]
PY
fi
# fp16 arithmetic forced to its scalar model (any CPU) is what the report says ran; a bad
# NG_F16_NATIVE is refused naming it before anything runs.
NG_F16_NATIVE=model expect 0 "fp16 arithmetic: model" -- bench --model lenet --per-layer \
  --batch 2 --steps 1 --device cpu --json "$pl"
grep -q '"fp16_arithmetic": "model"' "$pl" && pass=$((pass + 1)) ||
  { fail=$((fail + 1)); echo "FAIL: per-layer json under NG_F16_NATIVE=model: $(head -c 300 "$pl")"; }
NG_F16_NATIVE=fast expect 2 "NG_F16_NATIVE=fast: expected 0 (off), 1" -- info
rm -f "$pl"
# A config nested 100k levels deep is refused at once (it used to take hours), with status 2.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{ printf 'model:\n  width: '; head -c 100000 /dev/zero | tr '\0' '['; } >"$tmp/deep.yaml"
start=$(date +%s)
expect 2 "deep.yaml line 2: mappings and lists nest deeper than 64 levels" -- \
  train --config "$tmp/deep.yaml" --out "$tmp/run"
[ $(($(date +%s) - start)) -lt 30 ] && [ ! -e "$tmp/run" ] && pass=$((pass + 1)) || {
  fail=$((fail + 1))
  echo "FAIL: the deep config took over 30 s or left a run directory"
}
# data.workers outside [1, 256] is refused naming the key, before any run directory.
expect 2 "data.workers: 0 is below the minimum 1" -- \
  train --config "$cfg" --out "$tmp/w0" --set data.workers=0
[ ! -e "$tmp/w0" ] && pass=$((pass + 1)) || {
  fail=$((fail + 1))
  echo "FAIL: a refused data.workers left a run directory"
}
# data-bench --cold: before each pass the files it reads (shards from `natgrad shards`, PNG files)
# are dropped from the page cache, what stays resident is printed and must be small, and the rows
# say cold. Freshly written files are fully cached, so a drop that did nothing fails here. tmpfs
# cannot drop pages: when /tmp is tmpfs the files go to the build folder, on a disk.
cold=$tmp
[ "$(stat -f -c %T "$tmp")" = tmpfs ] && cold=$(mktemp -d "$(dirname "$ng")/cli-cold.XXXXXX")
trap 'rm -rf "$tmp" "$cold"' EXIT
syn=(--set data.name=synthetic --set data.synthetic.train=600 --set data.synthetic.test=200
  --set data.synthetic.noise=0.1 --set data.augment.crop_pad=0)
"$ng" shards --from "$cfg" --out "$cold/sh" --shard-mib 0.25 "${syn[@]}" >/dev/null 2>&1
nsh=$(ls "$cold/sh"/train-*.tar 2>/dev/null | wc -l)
sh=(--from "$cfg" --examples 500 --batch 50 --set data.name=shards --set data.dir="$cold/sh"
  --set data.shuffle_buffer=64 --set data.augment.crop_pad=0)
cold_ok() { # WHAT FILES OUTPUT: every residency line counts FILES files and at most 5% resident
  local lines worst
  lines=$(grep -c "^cold: $2 files, [0-9.]* MiB, [0-9.]*% resident before the pass$" <<<"$3")
  worst=$(grep -o '[0-9.]*% resident' <<<"$3" | sed 's/%.*//' | sort -g | tail -1)
  [ "$lines" -eq "$1" ] && awk -v w="${worst:-100}" 'BEGIN { exit !(w <= 5) }'
}
out=$("$ng" data-bench "${sh[@]}" --cold 2>&1)
if [ $? -eq 0 ] && [ "$nsh" -ge 5 ] && cold_ok 2 "$nsh" "$out" &&
  grep -Eq '^source \(this thread, cold\) +500 ' <<<"$out" &&
  grep -Eq '^loader \(batch 50, prefetch [0-9]+, workers [0-9]+, cold\) +500 ' <<<"$out"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
  echo "FAIL: data-bench --cold over $nsh shards: want two residency lines of at most 5% and cold rows:"
  echo "$out" | head -8
fi
out=$("$ng" data-bench --from "$cfg" --examples 300 "${syn[@]}" --png-dir "$cold/png" \
  --png-range -8,8 --cold 2>&1)
if [ $? -eq 0 ] && cold_ok 1 300 "$out" && grep -Eq '^png files \(this thread, cold\) +300 ' <<<"$out" &&
  grep -Eq '^source \(this thread\) +300 ' <<<"$out"; then
  pass=$((pass + 1))
else
  fail=$((fail + 1))
  echo "FAIL: data-bench --cold --png-dir: want one residency line for 300 files and a cold PNG row:"
  echo "$out" | head -8
fi
expect 2 "--cold: synthetic-train reads no files" -- data-bench --from "$cfg" "${syn[@]}" --cold
expect 2 "--cold: not with --device cuda" -- data-bench "${sh[@]}" --cold --device cuda
# Shards on tmpfs stay in memory: refused, naming the file, rather than timed as cold.
if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && shm=$(mktemp -d /dev/shm/cli-cold.XXXXXX 2>/dev/null); then
  trap 'rm -rf "$tmp" "$cold" "$shm"' EXIT
  cp -r "$cold/sh" "$shm/sh"
  expect 2 "--cold: 100.0% of the pages of $nsh files stay .*$shm/sh/train-.*on tmpfs" -- \
    data-bench "${sh[@]}" --set data.dir="$shm/sh" --cold
  rm -rf "$shm"
fi
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
