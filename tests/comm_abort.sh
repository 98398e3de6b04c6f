#!/usr/bin/env bash
# A fatal error on one rank ends the whole job: rank 1 fails while rank 0 waits in a barrier;
# mpirun must exit non-zero within seconds (bounded by timeout, never a hang), and stderr must
# name the rank and the message.
set -u
mpirun=$1 prog=$2
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
timeout 30 "$mpirun" --oversubscribe -np 2 "$prog" --fail-on-rank 1 >"$log" 2>&1
rc=$?
took=$(($(date +%s) - start))
cat "$log"
if [ $rc -eq 0 ]; then echo "FAIL: mpirun exited 0 although rank 1 failed"; exit 1; fi
if [ $rc -eq 124 ]; then echo "FAIL: the job hung (killed by timeout after 30 s)"; exit 1; fi
if [ $took -gt 15 ]; then echo "FAIL: the job took ${took} s to end"; exit 1; fi
if ! grep -q "natgrad: error: rank 1: deliberate failure on rank 1" "$log"; then
  echo "FAIL: stderr does not name the failing rank and its message"; exit 1
fi
echo "comm_abort: mpirun exited $rc after ${took} s"
