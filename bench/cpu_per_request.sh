#!/usr/bin/env bash
# CPU per request at a fixed request count, for A/B comparisons of two release binaries (steadier than
# the fixed-time wrk phase of bench/run.sh): starts the fake upstream and the gateway from BINARY, warms
# up with 5 000 requests, then sends 40 000 at 32 connections with oha and prints the gateway's
# utime+stime per request. Usage: bench/cpu_per_request.sh BINARY LABEL (alternate two builds).
set -euo pipefail
BIN=$1; LABEL=$2
cd "$(dirname "$0")/.."
KEY=sk-sy-master-bench-0123456789abcdefghij
"$BIN" fake-upstream --listen 127.0.0.1:19101 --completion-tokens 16 >/dev/null 2>&1 & UP=$!
SWITCHYARD_MASTER_KEY=$KEY BENCH_UPSTREAM_KEY=sk-bench-upstream DATABASE_URL=sqlite:///tmp/ab-$LABEL.db "$BIN" serve --config bench/switchyard.bench.toml --listen 127.0.0.1:19102 >/dev/null 2>&1 & GW=$!
trap 'kill $UP $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19102/health/liveness && break; sleep 0.1; done
BODY='{"model":"bench-model","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'
oha -n 5000 -c 32 --no-tui -m POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$BODY" http://127.0.0.1:19102/v1/chat/completions >/dev/null
t0=$(awk '{print $14+$15}' /proc/$GW/stat)
oha -n 40000 -c 32 --no-tui -m POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$BODY" http://127.0.0.1:19102/v1/chat/completions > "${TMPDIR:-/tmp}/oha-$LABEL.txt"
t1=$(awk '{print $14+$15}' /proc/$GW/stat)
hz=$(getconf CLK_TCK)
ok=$(grep -E "\[200\]" "${TMPDIR:-/tmp}/oha-$LABEL.txt" | awk '{print $2}')
python3 -c "print('$LABEL', 'us/request', round(($t1-$t0)/$hz*1e6/40000,1), 'ok', '$ok')"
