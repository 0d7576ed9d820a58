#!/bin/bash
# Instructions per request of the API bench's exec target, counted by
# callgrind only while wrk runs (setup and teardown excluded), so that two
# builds can be compared on a machine that is not quiet.
#   cargo bench --bench api --no-run      # prints the bench binary's path
#   benches/count-exec.sh <bench binary> [b|a] [seconds]
set -euo pipefail
BIN=$1; ONLY=${2:-b}; SECS=${3:-20}
OUT=$(mktemp -d)/callgrind.out
BENCH_ONLY=$ONLY BENCH_SECS=$SECS BENCH_CONNS=4 valgrind --tool=callgrind \
    --instr-atstart=no --callgrind-out-file="$OUT" "$BIN" > "$OUT.stdout" 2>&1 &
PID=$!
until grep -q "^wrk -t" "$OUT.stdout" 2>/dev/null; do
    sleep 0.5
    kill -0 $PID 2>/dev/null || { cat "$OUT.stdout"; exit 1; }
done
callgrind_control -i on $PID > /dev/null
until grep -q "req/s" "$OUT.stdout"; do sleep 0.5; done
callgrind_control -i off $PID > /dev/null
wait $PID
REQUESTS=$(grep -o '([0-9]* requests' "$OUT.stdout" | tr -dc 0-9)
TOTAL=$(callgrind_annotate "$OUT" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$REQUESTS requests, $((TOTAL / REQUESTS)) instructions per request ($OUT)"
