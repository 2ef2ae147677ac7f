#!/usr/bin/env bash
# One run, three paths to the same fake upstream: direct, through nginx (plain proxy_pass), and through
# Switchyard. Measures requests/s at 64 connections, latency at a fixed moderate rate, streaming time to
# first byte, the gateway's CPU time per request and peak RSS; writes bench/RESULTS.md.
#
#   bench/run.sh                 # defaults: 10 s per load step, 64 connections, 1000 req/s fixed rate
#   DURATION=20 RATE=2000 bench/run.sh
#
# Needs: wrk and nginx (apt-get install wrk nginx-light), oha (cargo install oha --locked), curl, python3.
# Loopback only; every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-1000}
STREAM_SAMPLES=${STREAM_SAMPLES:-200}
REPEAT=${REPEAT:-3}   # throughput steps are repeated, alternating paths, and the median kept (shared machines are noisy)
OUT=$PWD/bench/out
UPSTREAM=127.0.0.1:19101 GATEWAY=127.0.0.1:19102 NGINX=127.0.0.1:19103
KEY=sk-sy-master-bench-0123456789abcdefghij

for tool in wrk oha nginx curl python3; do  # curl: readiness checks
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (see the header of $0)" >&2; exit 1; }
done
cargo build --release --locked --bin switchyard
BIN=$PWD/target/release/switchyard
rm -rf "$OUT" && mkdir -p "$OUT/nginx-tmp"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://$1/" && return 0; sleep 0.1; done; echo "bench: $1 did not come up" >&2; exit 1; }

"$BIN" fake-upstream --listen "$UPSTREAM" --completion-tokens 16 >"$OUT/upstream.log" 2>&1 &
pids+=($!)
SWITCHYARD_MASTER_KEY=$KEY BENCH_UPSTREAM_KEY=sk-bench-upstream \
  "$BIN" serve --config bench/switchyard.bench.toml --listen "$GATEWAY" >"$OUT/gateway.log" 2>&1 &
GW_PID=$!
pids+=($GW_PID)
sed "s#@OUT@#$OUT#g" bench/nginx.conf.in >"$OUT/nginx.conf"
nginx -c "$OUT/nginx.conf" -p "$OUT" 2>"$OUT/nginx-start.log"
wait_port "$UPSTREAM"; wait_port "$GATEWAY"; wait_port "$NGINX"

cpu_ticks() { # utime+stime of a pid and its threads, in clock ticks
  awk '{print $14+$15}' "/proc/$1/stat"
}
nginx_ticks() {
  local t=0
  for p in $(pgrep -f "nginx: worker process" || true); do t=$((t + $(cpu_ticks "$p"))); done
  echo $t
}

BODY='{"model":"bench-model","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'
STREAM_BODY='{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16}'

# Warm up every path (connection pools, page cache).
for target in $UPSTREAM $NGINX $GATEWAY; do
  wrk -t2 -c16 -d2s -s bench/post.lua "http://$target/v1/chat/completions" >/dev/null
done

declare -A RPS CPU_US P50 P99 TTFB
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
url_of() { case $1 in direct) echo "http://$UPSTREAM/v1/chat/completions" ;; nginx) echo "http://$NGINX/v1/chat/completions" ;; switchyard) echo "http://$GATEWAY/v1/chat/completions" ;; esac; }
hz=$(getconf CLK_TCK)
declare -A RPS_RUNS CPU_RUNS
for rep in $(seq "$REPEAT"); do
  for name in direct nginx switchyard; do
    before_gw=$(cpu_ticks $GW_PID); before_ng=$(nginx_ticks)
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/post.lua --latency "$(url_of $name)" >"$OUT/wrk-$name-$rep.txt"
    after_gw=$(cpu_ticks $GW_PID); after_ng=$(nginx_ticks)
    total=$(awk '/requests in/ {print $1}' "$OUT/wrk-$name-$rep.txt")
    RPS_RUNS[$name]+=" $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name-$rep.txt")"
    case $name in
      switchyard) CPU_RUNS[$name]+=" $(python3 -c "print(($after_gw-$before_gw)/$hz*1e6/$total)")" ;;
      nginx) CPU_RUNS[$name]+=" $(python3 -c "print(($after_ng-$before_ng)/$hz*1e6/$total)")" ;;
    esac
  done
done
for name in direct nginx switchyard; do
  RPS[$name]=$(median ${RPS_RUNS[$name]})
  if [ -n "${CPU_RUNS[$name]:-}" ]; then CPU_US[$name]=$(python3 -c "print(round($(median ${CPU_RUNS[$name]}), 1))"); else CPU_US[$name]="-"; fi
done

for name in direct nginx switchyard; do
  url=$(url_of $name)
  url=${url%/v1/chat/completions}
  oha -z "${DURATION}s" -q "$RATE" -c 32 --no-tui --output-format json -m POST \
    -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" -d "$BODY" "$url/v1/chat/completions" >"$OUT/oha-$name.json"
  read -r P50[$name] P99[$name] < <(python3 -c "
import json; d = json.load(open('$OUT/oha-$name.json'))
p = d['latencyPercentiles']; print(round(p['p50']*1000, 3), round(p['p99']*1000, 3))")

  TTFB[$name]=$(python3 bench/ttfb.py "${url#http://}" "$KEY" "$STREAM_SAMPLES")
done
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$GW_PID/status)

python3 - "$OUT" <<PY
import datetime, subprocess
rps = {"direct": ${RPS[direct]}, "nginx": ${RPS[nginx]}, "switchyard": ${RPS[switchyard]}}
p50 = {"direct": ${P50[direct]}, "nginx": ${P50[nginx]}, "switchyard": ${P50[switchyard]}}
p99 = {"direct": ${P99[direct]}, "nginx": ${P99[nginx]}, "switchyard": ${P99[switchyard]}}
ttfb = {"direct": ${TTFB[direct]}, "nginx": ${TTFB[nginx]}, "switchyard": ${TTFB[switchyard]}}
cpu = {"nginx": ${CPU_US[nginx]}, "switchyard": ${CPU_US[switchyard]}}
rss_mb = round(${RSS_KB} / 1024, 1)
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
bars = [
    ("requests/s at least half of nginx's", rps["switchyard"] >= rps["nginx"] / 2, f"{rps['switchyard']:.0f} vs {rps['nginx']:.0f}/2"),
    ("p50 added over nginx < 0.3 ms at $RATE req/s", p50["switchyard"] - p50["nginx"] < 0.3, f"{p50['switchyard'] - p50['nginx']:+.3f} ms"),
    ("time to first streamed event within 0.3 ms of nginx", ttfb["switchyard"] - ttfb["nginx"] < 0.3, f"{ttfb['switchyard'] - ttfb['nginx']:+.3f} ms"),
    ("CPU per request at most 3x nginx's", cpu["switchyard"] <= 3 * cpu["nginx"], f"{cpu['switchyard']} vs 3 x {cpu['nginx']} us"),
]
lines = [
    "# Benchmark results",
    "",
    f"Produced by \`bench/run.sh\` (DURATION=$DURATION CONNECTIONS=$CONNECTIONS RATE=$RATE STREAM_SAMPLES=$STREAM_SAMPLES REPEAT=$REPEAT) "
    f"at commit {rev} on {datetime.date.today()}, on this project's 2-core machine, everything on loopback: the fake "
    "upstream (\`switchyard fake-upstream\`, 16-token replies, no added latency), nginx 1.22 (\`proxy_pass\` with "
    "upstream keep-alive, access log on), and Switchyard (release build, info logging; the per-request usage line is at debug level, every request goes to the SQLite ledger). "
    "Load tools share the two cores with the servers, so absolute figures are pessimistic; compare within the run. "
    "Throughput and CPU figures are the median of $REPEAT alternating runs.",
    "",
    "| path | req/s at $CONNECTIONS conns (wrk) | p50 ms at $RATE req/s (oha) | p99 ms | first SSE event p50 ms (bench/ttfb.py) | CPU us/request |",
    "|---|---|---|---|---|---|",
]
for n in ["direct", "nginx", "switchyard"]:
    lines.append(f"| {n} | {rps[n]:.0f} | {p50[n]} | {p99[n]} | {ttfb[n]} | {cpu.get(n, '-')} |")
lines += ["", f"Switchyard peak RSS (VmHWM): {rss_mb} MB.", "", "Bars for the foundation issue:", ""]
for what, ok, detail in bars:
    lines.append(f"- [{'x' if ok else ' '}] {what}: {detail}")
lines += ["", "Raw outputs of the last run are in \`bench/out/\` (not committed).", ""]
open("bench/RESULTS.md", "w").write("\n".join(lines))
print("\n".join(lines))
PY
