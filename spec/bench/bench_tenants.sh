#!/usr/bin/env bash
# Many churches under one connection budget, in one run on a private cluster
# (var/bench-pg), against a server in its default configuration (2 workers,
# db.server_max_connections 80, db.pool_max 4):
#  - GET /api/me and GET /api/conversations, wrk with 64 connections for
#    RUN_S seconds after WARM_S seconds of warm-up, with access tokens spread
#    uniformly over 1, 20, 200 and 1,000 churches, and over 1,000 churches
#    with Zipf-distributed activity (s = 1.0: church k is picked with weight
#    1/k). For each: req/s, p99, responses that are not 2xx, and the server's
#    connects per second (steeple_db_connects_total, over the measured run),
#    with requests per connect and the ratio to the first scenario's rate
#    (x1st: the 1-church run by default);
#  - pgbench -C (a new connection per transaction, -S, 64 clients) on the same
#    cluster: the connects per second the cluster manages, to compare with the
#    runs bound by connection set-up.
# Churches are made fast: one registered through the API, the other
# CHURCHES - 1 copied from its database in SQL (CREATE DATABASE ... TEMPLATE,
# SEED_JOBS sessions at once) and entered in the registry; their owners'
# access tokens are minted by a bench route. The seeding time is printed.
#
# SCENARIOS lists them as churches:s (s = 0: uniform); CHURCHES must cover
# the largest. PATHS lists the paths measured; PGDIR and PG_PORT place the
# cluster. With KEEP=1 the server's /metrics before and after each measured
# run are kept beside wrk's output. Where connection set-up bounds a run, the
# summary gives its requests per connect, all and 2xx only (a 503 needs none).
#
#   RUN_S=10 WARM_S=5 CHURCHES=1000 SEED_JOBS=4 SCENARIOS="1:0 20:0 200:0 1000:0 1000:1.0" \
#   BIN=build/steeple KEEP=1 bash spec/bench/bench_tenants.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN_S=${RUN_S:-10}
WARM_S=${WARM_S:-5}
CHURCHES=${CHURCHES:-1000}
SEED_JOBS=${SEED_JOBS:-4}
SCENARIOS=${SCENARIOS:-1:0 20:0 200:0 1000:0 1000:1.0}
PATHS=${PATHS:-/api/me /api/conversations}
BIN=${BIN:-$PWD/build/steeple}
PGDIR=${PGDIR:-var/bench-pg}
PG_PORT=${PG_PORT:-5439}
PASSWORD=bench-password-123
mkdir -p var
work=$(mktemp -d "$PWD/var/bench-tenants.XXXXXX")
pid=''
stop_server() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
cleanup() {
    stop_server
    bash scripts/pg.sh --dir "$PGDIR" --port "$PG_PORT" destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
server_log() { [ -f "$work/log" ] && { echo "--- last lines of the server log ($work/log):" >&2; tail -20 "$work/log" >&2; }; return 0; }
die() { echo "bench_tenants: $*" >&2; server_log; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }

bash scripts/pg.sh --dir "$PGDIR" --port "$PG_PORT" start
export DATABASE_URL
DATABASE_URL=$(bash scripts/pg.sh --dir "$PGDIR" --port "$PG_PORT" url)
export STEEPLE_TENANT_DATABASE_URLS=
export STEEPLE_JWT_SECRET=steeple-bench-jwt-secret-of-at-least-32-bytes
export STEEPLE_DATA_KEY=c3RlZXBsZS1iZW5jaC1kYXRhLWtleS0zMi1ieXRlcyE= # "steeple-bench-data-key-32-bytes!"
export STEEPLE_AUTH_RATE_PER_MIN=0
export STEEPLE_SPOOL_DIR=$work/spool
"$BIN" migrate registry >/dev/null
"$BIN" migrate tenants >/dev/null

db_url() { # database → its URL on the bench cluster
    local base=${DATABASE_URL%%\?*}
    echo "${base%/*}/$1?${DATABASE_URL#*\?}"
}
sql() { # database sql → unaligned rows
    psql "$(db_url "$1")" -XAtq -v ON_ERROR_STOP=1 -c "$2"
}

# The server runs the scripts of a copy of lua/ with the bench routes.
. spec/bench/churches.sh
bench_scripts
port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
base=http://127.0.0.1:$port
cat > "$work/config.lua" <<CFG
return { port = $port, log = { level = "warn" }, auth = { access_ttl_s = 86400 } }
CFG
start_server() {
    "$BIN" serve --config "$work/config.lua" --scripts "$work/lua" 2>>"$work/log" &
    pid=$!
    for _ in $(seq 100); do
        curl -sf "$base/health" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "the server exited at start-up"
        sleep 0.1
    done
    die "the server did not start"
}

# --- churches -------------------------------------------------------------------
start_server
seed_churches "$CHURCHES" "$SEED_JOBS" +15557770001
start_server
mint_tokens "$work/tokens" "$CHURCHES"

# --- wrk ------------------------------------------------------------------------
# spec/bench/tokens.lua: BENCH_TOKENS, a file of tokens; BENCH_ZIPF: s (0: uniform).

# wrk output → "req_per_s p99_ms requests non2xx detail"
. spec/bench/wrk_summary.sh
connects() { # the server's connects so far, every reason
    curl -sf "$base/metrics" | awk '/^steeple_db_connects_total\{/ { n += $2 } END { print n + 0 }'
}
run_wrk() { # out seconds tokens zipf path
    BENCH_TOKENS=$3 BENCH_ZIPF=$4 wrk -t2 -c64 -d"$2s" --timeout 10s --latency -s spec/bench/tokens.lua "$base$5" \
        > "$1" 2>&1 || die "wrk failed: $(cat "$1")"
}

read -r -a scenarios <<< "$SCENARIOS"
for sc in "${scenarios[@]}"; do
    [ "${sc%%:*}" -le "$CHURCHES" ] || die "scenario $sc needs more than CHURCHES=$CHURCHES churches"
done
echo "wrk: 64 connections, 2 threads, ${WARM_S} s warm-up then ${RUN_S} s measured; default configuration (2 workers," \
     "server_max_connections 80, pool_max 4)"
printf '%-26s %-18s %9s %9s %8s %10s %9s %8s\n' "path" "churches" "req/s" "p99 ms" "non-2xx" "connects/s" "req/conn" "x1st"
results=()
read -r -a paths <<< "$PATHS"
for path in "${paths[@]}"; do
    one=''
    for sc in "${scenarios[@]}"; do
        n=${sc%%:*} s=${sc#*:}
        head -n "$n" "$work/tokens" > "$work/tokens_$n"
        run_wrk "$work/warm" "$WARM_S" "$work/tokens_$n" "$s" "$path"
        out="$work/wrk_${path//\//_}_${n}_$s"
        [ -z "${KEEP:-}" ] || curl -sf "$base/metrics" > "$out.metrics0"
        c0=$(connects)
        run_wrk "$out" "$RUN_S" "$work/tokens_$n" "$s" "$path"
        c1=$(connects)
        [ -z "${KEEP:-}" ] || curl -sf "$base/metrics" > "$out.metrics1"
        read -r rps p99 all bad detail < <(wrk_summary "$out")
        cps=$(awk -v a="$c0" -v b="$c1" -v t="$RUN_S" 'BEGIN { printf "%.1f", (b - a) / t }')
        per=$(ratio "$all" "$((c1 - c0))")
        good=$(ratio "$((all - bad))" "$((c1 - c0))")
        [ -n "$one" ] || one=$rps
        label="$n uniform"
        [ "$s" = 0 ] || label="$n Zipf s=$s"
        printf '%-26s %-18s %9s %9s %8s %10s %9s %8s%s\n' "$path" "$label" "$rps" "$p99" "$bad" "$cps" "$per" \
            "$(ratio "$rps" "$one")" "${detail:+ ($detail )}"
        results+=("$path|$label|$rps|$p99|$bad|$all|$cps|$per|$good")
    done
done
stop_server

# --- pgbench -C -----------------------------------------------------------------
sql steeple "CREATE DATABASE bench_pgbench" >/dev/null
pgbench -i -q -s 1 "$(db_url bench_pgbench)" >/dev/null 2>&1 || die "pgbench -i failed"
pgbench -n -C -S -c 64 -j 2 -T "$RUN_S" "$(db_url bench_pgbench)" > "$work/pgbench_c" 2>&1 ||
    die "pgbench -C failed: $(cat "$work/pgbench_c")"
ctps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench_c")
pgbench -n -S -c 64 -j 2 -T "$RUN_S" "$(db_url bench_pgbench)" > "$work/pgbench_s" 2>&1 ||
    die "pgbench failed: $(cat "$work/pgbench_s")"
stps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench_s")
echo "pgbench -S, 64 clients: $ctps tps with a new connection per transaction (-C), $stps tps without"

errors=$(grep -c '"level":"error"' "$work/log" || true)
warns=$(grep -c '"level":"warn"' "$work/log" || true)
echo "server log: $errors error lines, $warns warn lines"
if [ "$errors" != 0 ] || [ "$warns" != 0 ]; then # their messages, most frequent first
    grep -E '"level":"(warn|error)"' "$work/log" | sed -E 's/.*"level":"([a-z]+)".*"msg":"(([^"\\]|\\.)*)".*/\1: \2/' |
        sort | uniq -c | sort -rn | head -5
fi

echo "--- summary ---"
for r in "${results[@]}"; do
    IFS='|' read -r path label rps p99 bad all cps per good <<< "$r"
    line="$path, $label: $rps req/s, p99 $p99 ms, $bad non-2xx of $all, $cps connects/s"
    case $label in
        "1 uniform") ;;
        "20 uniform") line="$line (targets: >= 0.8x the 1-church rate, connects/s near 0, no non-2xx)" ;;
        *)
            line="$line, $per requests ($good 2xx) per connect; connects/s / pgbench -C tps: $(ratio "$cps" "$ctps")"
            line="$line (target when bound by connection set-up: <= 1% non-2xx)" ;;
    esac
    echo "$line"
done
