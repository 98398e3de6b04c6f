# Helpers of the train_*.sh tests, sourced: a scratch folder $work removed at exit together with
# the background runs listed in $pids (and after the commands in $at_exit), pass/fail counters,
# a run's logged losses, and bounded waits on a background run.
work=$(mktemp -d)
pids=()
at_exit=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  for c in "${at_exit[@]}"; do eval "$c"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 143" TERM INT # so that cleanup (an unmount, say) also runs when ctest times out
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
report() { # NAME: the summary line; the status says whether all passed
  echo "$1: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
# "step loss" for each train line of DIR/metrics.jsonl.
losses() { grep '"type": "train"' "$1/metrics.jsonl" | sed 's/.*"step": \([0-9]*\),.*"loss": \([^,]*\),.*/\1 \2/'; }
lines() { if [ -f "$1/metrics.jsonl" ]; then wc -l <"$1/metrics.jsonl"; else echo 0; fi; }
has_lines() { [ "$(lines "$1")" -ge "$2" ]; } # DIR N
# Waits at most 60 s for the command TEST... to succeed while PID runs; fails when PID ended first.
wait_for() { # PID TEST...
  local pid=$1
  shift
  for _ in $(seq 600); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# $work/small.yaml: a run of 40 steps of a small MLP on synthetic data, about a second.
small_yaml() {
  cat >"$work/small.yaml" <<'YAML'
seed: 3
model: {arch: mlp, width: 32, depth: 2, dropout: 0.1}
data:
  name: synthetic
  synthetic: {train: 600, test: 200, noise: 3.0}
  augment: {crop_pad: 1, hflip: true}
  prefetch: 2
train: {batch_size: 50, steps: 40, log_every: 1, checkpoint_every: 10, eval_every: 20}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.001}
schedule: {name: cosine, warmup_steps: 5}
YAML
}
# `natgrad train --config CONFIG --out $work/bad ARGS...` must exit 2 naming NEEDLE and leave no
# run directory. Uses $ng.
expect_bad_train() { # CONFIG NEEDLE ARGS...
  local cfg=$1 needle=$2
  shift 2
  rm -rf "$work/bad"
  local out status
  out=$("$ng" train --config "$cfg" --out "$work/bad" "$@" 2>&1)
  status=$?
  if [ $status -eq 2 ] && grep -q -- "$needle" <<<"$out" && [ ! -e "$work/bad" ]; then ok; else
    bad "train $* -> status $status, want 2 naming '$needle' and no run dir: $(head -3 <<<"$out")"
  fi
}
# `natgrad shards --from CONFIG --out $work/s_NAME ARGS...`, quietly; a failure is counted. Uses $ng.
shards_of() { # CONFIG NAME ARGS...
  local cfg=$1 name=$2
  shift 2
  "$ng" shards --from "$cfg" --out "$work/s_$name" "$@" >/dev/null 2>&1 || bad "natgrad shards ($name) failed"
}
