#!/usr/bin/env bash
# CPU per request for A/B comparisons of two release binaries, with wrk where oha is not installed (as
# bench/cpu_per_request.sh, but time-bounded: 3 s to warm up, then 10 s at 32 connections; the gateway's
# utime+stime from /proc/PID/stat over the requests wrk counted). Usage: bench/cpu_per_request_wrk.sh
# BINARY LABEL (alternate two builds).
set -euo pipefail
BIN=$1; LABEL=$2
cd "$(dirname "$0")/.."
KEY=sk-sy-master-bench-0123456789abcdefghij
"$BIN" fake-upstream --listen 127.0.0.1:19101 --completion-tokens 16 >/dev/null 2>&1 & UP=$!
SWITCHYARD_MASTER_KEY=$KEY BENCH_UPSTREAM_KEY=sk-bench-upstream DATABASE_URL=sqlite:///tmp/ab-$LABEL.db "$BIN" serve --config bench/switchyard.bench.toml --listen 127.0.0.1:19102 >/dev/null 2>&1 & GW=$!
trap 'kill $UP $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19102/health/liveness && break; sleep 0.1; done
LUA=${TMPDIR:-/tmp}/switchyard-bench-post.lua
cat > "$LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-sy-master-bench-0123456789abcdefghij"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'
LUA
wrk -t2 -c32 -d3s -s "$LUA" http://127.0.0.1:19102/v1/chat/completions >/dev/null
t0=$(awk '{print $14+$15}' /proc/$GW/stat)
out=$(wrk -t2 -c32 -d10s -s "$LUA" http://127.0.0.1:19102/v1/chat/completions)
t1=$(awk '{print $14+$15}' /proc/$GW/stat)
n=$(echo "$out" | awk '/requests in/ {print $1}')
non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
hz=$(getconf CLK_TCK)
python3 -c "print('$LABEL', 'us/request', round(($t1-$t0)/$hz*1e6/$n,1), 'requests', $n, 'non2xx', '${non2xx:-0}')"
