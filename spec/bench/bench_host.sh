#!/usr/bin/env bash
# GET /health through the Lua router vs the plain C handler of the same binary
# (bench.plain_path), with wrk at 64 connections, alternating rounds in one run;
# then the RSS of the worker at idle and after 1,000,000 requests.
#
#   ROUNDS=3 SECONDS_PER_ROUND=10 TOTAL=1000000 LOG_LEVEL=info bash bench_host.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DUR=${SECONDS_PER_ROUND:-10}
TOTAL=${TOTAL:-1000000}
LOG_LEVEL=${LOG_LEVEL:-info}
BIN=${STEEPLE_BIN:-build/steeple}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
cat > "$work/config.lua" <<CFG
return { port = $port, workers = 1, log = { level = "$LOG_LEVEL" },
         bench = { plain_path = "/plain" } }
CFG
"$BIN" serve --config "$work/config.lua" 2> "$work/log" &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
worker=$(pgrep -P $pid | head -1)
rss() { awk '/VmRSS/ {print $2}' /proc/$worker/status; }

run_wrk() { # path → "req/s p99_ms"
    wrk -t1 -c64 -d"${DUR}s" --latency "http://127.0.0.1:$port$1" >"$work/wrk" 2>&1
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$work/wrk")
    echo "$rps $p99"
}

idle_rss=$(rss)
lua_sum=0; plain_sum=0
printf '%-6s %-8s %12s %10s\n' round route req/s p99_ms
for r in $(seq "$ROUNDS"); do
    read -r prps pp99 < <(run_wrk /plain)
    read -r lrps lp99 < <(run_wrk /health)
    printf '%-6s %-8s %12s %10s\n' "$r" plain "$prps" "$pp99" "$r" lua "$lrps" "$lp99"
    plain_sum=$(awk -v a="$plain_sum" -v b="$prps" 'BEGIN {print a + b}')
    lua_sum=$(awk -v a="$lua_sum" -v b="$lrps" 'BEGIN {print a + b}')
done
ratio=$(awk -v a="$lua_sum" -v b="$plain_sum" 'BEGIN {printf "%.3f", a / b}')
echo "lua/plain throughput ratio over $ROUNDS rounds: $ratio (target >= 0.70), log level $LOG_LEVEL"

# RSS: at idle, after the rounds above (warm), and after TOTAL more requests
# to the Lua route; no growth between the last two is the check.
count() {
    curl -s "http://127.0.0.1:$port/metrics" |
        awk '/^steeple_http_requests_total/ {s += $2} END {printf "%d", s}'
}
warm_rss=$(rss)
start=$(count)
sent=0
while [ "$sent" -lt "$TOTAL" ]; do
    wrk -t1 -c64 -d10s "http://127.0.0.1:$port/health" >/dev/null 2>&1
    sent=$(( $(count) - start ))
done
after_rss=$(rss)
echo "worker RSS: idle ${idle_rss} KiB, warm ${warm_rss} KiB, after ${sent} more Lua requests ${after_rss} KiB"
