#!/usr/bin/env bash
# Broadcast dispatch, on a private cluster (var/bench-pg), against a fake
# Telnyx API on this machine (fake_telnyx_fast.c: one epoll thread, a plain
# 200 answer, its log buffered and flushed once a second; FAKE=lua runs the
# specs' spec/support/fake_telnyx.lua instead, for comparison). The server
# runs its default configuration (workers: one per core) but for the keys
# each part prints: telnyx.api_base (the fake), no quiet hours (00:00-00:00,
# so the run does not depend on the time of day) and the limits below.
#
#  1. Throughput: CHURCHES churches x RECIPIENTS opted-in recipients each
#     (default 200 x 1,000), rate limits off (messaging.rate_per_min 0,
#     messaging.daily_cap 0, telnyx.max_per_second 0; telnyx.max_in_flight
#     stays 16 per worker), one broadcast per church, all with the same
#     sendAt LEAD_S seconds ahead so they start at once. Reports the sends
#     per second handed to the fake (from its log's timestamps: over the
#     whole run, first to last call, and over the middle 80% of the calls),
#     against the target of 2,000/s; every recipient called exactly once and
#     the broadcasts' counts; each worker's RSS sampled every second (first,
#     at a quarter, half and three quarters of the run, last, max); the CPU seconds of PostgreSQL (every process of the
#     cluster, from /proc, the postmaster's reaped children included), of
#     the workers and of the fake over the run, with their share of a core;
#     and, with PGSS=1 (default), the statements that took the most time
#     (pg_stat_statements, loaded in the bench cluster).
#  2. Pacing: messaging.rate_per_min RATE_PER_MIN (default 600, daily_cap
#     and max_per_second off) on RATE_CHURCHES churches (default 10) of
#     RATE_RECIPIENTS recipients (default 1,500, so draining takes more than
#     2 minutes). Per church: the largest number of calls in any 60-second
#     window (must be <= RATE_PER_MIN) and the time from sendAt to its last
#     call against the ideal, RATE_RECIPIENTS / RATE_PER_MIN minutes.
# PARTS chooses the parts ("throughput rate"); PREPARED=false runs the
# server with db.prepared_statements off, for comparison. Churches are made fast: one
# registered through the API (with a phone number), the others copied from
# its database with their contacts and list (CREATE DATABASE ... TEMPLATE,
# SEED_JOBS sessions) and entered in the registry, each with its own number;
# their owners' tokens come from a bench route and the broadcasts are
# created through POST /api/broadcasts. DRAIN_TIMEOUT_S bounds each part's
# wait. One summary block at the end.
#
#   CHURCHES=200 RECIPIENTS=1000 RATE_CHURCHES=10 RATE_RECIPIENTS=1500 RATE_PER_MIN=600 \
#   LEAD_S=60 DRAIN_TIMEOUT_S=3600 SEED_JOBS=4 PGSS=1 FAKE=fast PARTS="throughput rate" PREPARED=true \
#   KEEP=1 bash spec/bench/bench_broadcasts.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CHURCHES=${CHURCHES:-200}
RECIPIENTS=${RECIPIENTS:-1000}
RATE_CHURCHES=${RATE_CHURCHES:-10}
RATE_RECIPIENTS=${RATE_RECIPIENTS:-1500}
RATE_PER_MIN=${RATE_PER_MIN:-600}
LEAD_S=${LEAD_S:-60}
DRAIN_TIMEOUT_S=${DRAIN_TIMEOUT_S:-3600}
SEED_JOBS=${SEED_JOBS:-4}
PGSS=${PGSS:-1}
FAKE=${FAKE:-fast}
PREPARED=${PREPARED:-true}
PARTS=${PARTS:-throughput rate}
TARGET=2000
BIN=${BIN:-$PWD/build/steeple}
PGDIR=var/bench-pg
PGPORT_B=5439
PASSWORD=bench-password-123
TEXT='Hello {{firstName|friend}}, see you on Sunday at {{churchName}}.'
mkdir -p var
work=$(mktemp -d "$PWD/var/bench-broadcasts.XXXXXX")
pid='' fake_pid=''
stop_server() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
stop_fake() {
    if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; fi
    fake_pid=
}
cleanup() {
    stop_server
    stop_fake
    bash scripts/pg.sh --dir "$PGDIR" --port "$PGPORT_B" destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
server_log() { [ -f "$work/log" ] && { echo "--- last lines of the server log ($work/log):" >&2; tail -20 "$work/log" >&2; }; return 0; }
die() { echo "bench_broadcasts: $*" >&2; server_log; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
now() { date +%s.%N; }
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- cluster ---------------------------------------------------------------------
. spec/bench/cpu_lib.sh
. spec/bench/pgss_lib.sh
pg() { bash scripts/pg.sh --dir "$PGDIR" --port "$PGPORT_B" "$@"; }
pg start
if [ "$PGSS" = 1 ]; then
    pgss_conf "$PGDIR/data"
    pg stop >/dev/null
    pg start
fi
export DATABASE_URL
DATABASE_URL=$(pg url)
export STEEPLE_TENANT_DATABASE_URLS=
export STEEPLE_JWT_SECRET=steeple-bench-jwt-secret-of-at-least-32-bytes
export STEEPLE_DATA_KEY=c3RlZXBsZS1iZW5jaC1kYXRhLWtleS0zMi1ieXRlcyE= # "steeple-bench-data-key-32-bytes!"
export STEEPLE_AUTH_RATE_PER_MIN=0
export STEEPLE_SPOOL_DIR=$work/spool
export TELNYX_API_KEY=bench-api-key
"$BIN" migrate registry >/dev/null
"$BIN" migrate tenants >/dev/null

db_url() { # database → its URL on the bench cluster
    local base=${DATABASE_URL%%\?*}
    echo "${base%/*}/$1?${DATABASE_URL#*\?}"
}
sql() { # database sql → unaligned rows
    psql "$(db_url "$1")" -XAtq -v ON_ERROR_STOP=1 -c "$2"
}
if [ "$PGSS" = 1 ]; then sql steeple "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null; fi

workers() { ps -o pid= --ppid "$pid" | tr -d ' ' | sort -n; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- the server and the fake -----------------------------------------------------------
cp -r lua "$work/lua"
cp spec/bench/bench_routes.lua "$work/lua/routes/bench.lua"
sed -i 's/^    "ops",$/    "ops", "bench",/' "$work/lua/routes/init.lua"
port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
base=http://127.0.0.1:$port
if [ "$FAKE" = fast ]; then
    cc -std=c11 -O2 -Wall -Wextra -o "$work/fake_telnyx_fast" spec/bench/fake_telnyx_fast.c || die "cannot build the fake"
fi
fake_port=''
start_fake() { # log
    local i
    rm -f "$work/fake_port"
    if [ "$FAKE" = fast ]; then
        "$work/fake_telnyx_fast" "$work/fake_port" "$1" &
        fake_pid=$!
        for i in $(seq 50); do [ -s "$work/fake_port" ] && break; sleep 0.1; done
        fake_port=$(cat "$work/fake_port" 2>/dev/null) || die "the fake did not start"
    else
        fake_port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
        lua5.4 spec/support/fake_telnyx.lua "$fake_port" "$1" &
        fake_pid=$!
        for i in $(seq 50); do
            curl -s -o /dev/null "http://127.0.0.1:$fake_port/" && break
            sleep 0.1
        done
    fi
    : "$i"
}
# The fake's log as lines "SECONDS FROM TO" of POST /v2/messages.
fake_calls() { # log
    if [ "$FAKE" = fast ]; then cat "$1"; return; fi
    FAKE_LOG=$1 lua5.4 -e 'local cjson = require "cjson"
        for line in io.lines(os.getenv("FAKE_LOG")) do
            local r = cjson.decode(line)
            if r.path == "/v2/messages" and type(r.body) == "table" then
                print(string.format("%.6f %s %s", r.at, r.body.from, r.body.to))
            end
        end'
}
# config: rate_per_min daily_cap max_per_second
write_config() {
    cat > "$work/config.lua" <<CFG
return { port = $port, log = { level = "warn" }, auth = { access_ttl_s = 86400 },
         db = { prepared_statements = $PREPARED },
         telnyx = { api_base = "http://127.0.0.1:${fake_port:-9}", max_per_second = $3 },
         messaging = { rate_per_min = $1, daily_cap = $2, quiet_start = "00:00", quiet_end = "00:00" } }
CFG
}
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

# --- churches ------------------------------------------------------------------------
# One church registered through the API; its database, with a list of n
# opted-in contacts, is the template of the others.
write_config 0 0 0
start_server
status=$(curl -s -o "$work/reg" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data \
    "{\"churchName\":\"Bench Broadcast 0001\",\"email\":\"owner-$$@bench.example\",\"password\":\"$PASSWORD\",\"adminName\":\"Bench Owner\",\"phoneNumber\":\"+15558880001\"}" \
    "$base/api/auth/register")
[ "$status" = 201 ] || die "registering church 1 answered $status: $(cat "$work/reg")"
stop_server # no connection may stay on the databases copied below
seed_db=$(sql steeple "SELECT db_name FROM tenants WHERE church_name = 'Bench Broadcast 0001'")
admin=$(sql "$seed_db" "SELECT id FROM admins LIMIT 1")
for _ in $(seq 100); do # the stopped server's backends are gone
    [ "$(sql steeple "SELECT count(*) FROM pg_stat_activity WHERE datname = '$seed_db'")" = 0 ] && break
    sleep 0.1
done
fill() { # database n → the id of its list of n opted-in contacts
    local list
    list=$(sql "$1" "INSERT INTO lists (name) VALUES ('Everyone') RETURNING id")
    sql "$1" "INSERT INTO contacts (phone_number, first_name, last_name, consent, consent_source, consent_at)
        SELECT '+1555' || lpad(i::text, 7, '0'), CASE WHEN i % 10 = 0 THEN '' ELSE 'First' || i END,
               'Last' || i, 'opted_in', 'admin', now()
        FROM generate_series(1, $2) i;
        INSERT INTO list_members (list_id, contact_id) SELECT '$list', id FROM contacts;
        ANALYZE" >/dev/null
    echo "$list"
}
copies() { # template prefix from to → CREATE DATABASE prefixNNNN TEMPLATE template, SEED_JOBS at once
    local f
    rm -f "$work"/create.*
    for i in $(seq "$3" "$4"); do printf 'CREATE DATABASE %s%04d TEMPLATE %s;\n' "$2" "$i" "$1"; done |
        split -n "r/$SEED_JOBS" - "$work/create."
    for f in "$work"/create.*; do psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -f "$f" >/dev/null & done
    wait
}
t0=$(now)
rate_tpl=bench_rate_template
if has_part rate; then
    sql steeple "CREATE DATABASE $rate_tpl TEMPLATE $seed_db" >/dev/null
    rate_list=$(fill "$rate_tpl" "$RATE_RECIPIENTS")
    copies "$rate_tpl" tenant_bbr 1 "$RATE_CHURCHES"
    sql steeple "INSERT INTO tenants (church_name, status, db_server, db_name, phone_number)
        SELECT 'Bench Rate ' || lpad(i::text, 4, '0'), 'active', 'main', 'tenant_bbr' || lpad(i::text, 4, '0'),
               '+1555999' || lpad(i::text, 4, '0')
        FROM generate_series(1, $RATE_CHURCHES) AS i" >/dev/null
fi
list=$(fill "$seed_db" "$RECIPIENTS")
if has_part throughput; then
    copies "$seed_db" tenant_bb 2 "$CHURCHES"
    sql steeple "INSERT INTO tenants (church_name, status, db_server, db_name, phone_number)
        SELECT 'Bench Broadcast ' || lpad(i::text, 4, '0'), 'active', 'main', 'tenant_bb' || lpad(i::text, 4, '0'),
               '+1555888' || lpad(i::text, 4, '0')
        FROM generate_series(2, $CHURCHES) AS i" >/dev/null
fi
t1=$(now)
awk -v a="$t0" -v b="$t1" -v n="$CHURCHES" -v r="$RECIPIENTS" -v m="$RATE_CHURCHES" -v q="$RATE_RECIPIENTS" \
    -v parts="$PARTS" -v j="$SEED_JOBS" 'BEGIN {
    printf "seeded in %.1f s (%d sessions):", b - a, j
    if (parts ~ /throughput/) printf " %d churches x %d recipients (1 registered, the others copies);", n, r
    if (parts ~ /rate/) printf " %d churches x %d recipients for the rate", m, q
    printf "\n" }'

# Creates one broadcast per token, all with sendAt $2 (Unix seconds); a 503
# (no database connection free in time) is tried again, up to 5 rounds.
# Sets created_late: seconds from sendAt to the last creation (< 0: all in
# time; else the late ones started at once when created).
retried=0
create_broadcasts() { # tokens-file send-at list
    local at round left
    at=$(date -u -d "@$2" +%Y-%m-%dT%H:%M:%SZ)
    export BODY BASE=$base
    BODY=$(printf '{"text":"%s","lists":["%s"],"sendAt":"%s"}' "$TEXT" "$3" "$at")
    cp "$1" "$work/to_create"
    for round in 1 2 3 4 5; do
        # "status token" per line
        xargs -P 8 -I{} bash -c 'echo "$(curl -s -o /dev/null -w "%{http_code}" -X POST \
            -H "Content-Type: application/json" -H "Authorization: Bearer $1" --data "$BODY" \
            "$BASE/api/broadcasts") $1"' _ {} < "$work/to_create" > "$work/created"
        awk '$1 != 201 && $1 != 503 { bad = bad " " $1 } END { if (bad != "") { print "answered" bad; exit 1 } }' \
            "$work/created" || die "creating broadcasts: $(awk '{ print $1 }' "$work/created" | sort | uniq -c | tr '\n' ' ')"
        awk '$1 == 503 { print $2 }' "$work/created" > "$work/to_create"
        left=$(wc -l < "$work/to_create")
        [ "$left" = 0 ] && break
        retried=$((retried + left))
        sleep 1
    done
    [ "$left" = 0 ] || die "creating broadcasts: $left still answered 503 after 5 rounds"
    created_late=$(awk -v a="$2" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
}
tokens() { # prefix → a file of tokens, one a line
    local out=$work/tokens-${1// /_}
    curl -sf "$base/bench/tokens?prefix=${1// /%20}&admin=$admin" > "$out" || die "cannot mint tokens"
    echo "$out"
}
# Waits for n calls in the fake's log and no church left in
# broadcast_tenants, sampling the workers' RSS every second into $work/rss
# ("second pid kB"); sets drained (1 or 0).
drained=0
wait_drain() { # n start
    local n=$1 calls=0 left w
    drained=0
    : > "$work/rss"
    while :; do
        for w in $(workers); do
            echo "$(awk -v a="$2" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') $w $(rss_kb "$w")" >> "$work/rss"
        done
        calls=$(wc -l < "$fake_log")
        if [ "$calls" -ge "$n" ]; then
            left=$(sql steeple "SELECT count(*) FROM broadcast_tenants")
            [ "$left" = 0 ] && { drained=1; return; }
        fi
        awk -v a="$2" -v b="$(now)" -v t="$DRAIN_TIMEOUT_S" 'BEGIN { exit !(b - a > t) }' && return
        kill -0 "$pid" 2>/dev/null || die "the server exited during the run"
        sleep 1
    done
}
summary=()

# --- 1. throughput ---------------------------------------------------------------------
if has_part throughput; then
    fake_log=$work/fake-throughput.log
    start_fake "$fake_log"
    write_config 0 0 0
    start_server
    tok=$(tokens "Bench Broadcast ")
    [ "$(wc -l < "$tok")" = "$CHURCHES" ] || die "expected $CHURCHES tokens"
    n=$((CHURCHES * RECIPIENTS))
    at=$(( $(date +%s) + LEAD_S ))
    retried=0
    create_broadcasts "$tok" "$at" "$list"
    created_retried=$retried created_at_late=$created_late
    if [ "$PGSS" = 1 ]; then pgss_reset; fi
    mapfile -t wpids < <(workers)
    while [ "$(date +%s)" -lt "$at" ]; do sleep 0.1; done
    c0=$(now) pg0=$(pg_cpu "$PGDIR") w0=$(proc_cpu "${wpids[@]}") f0=$(proc_cpu "$fake_pid")
    wait_drain "$n" "$at"
    c1=$(now) pg1=$(pg_cpu "$PGDIR") w1=$(proc_cpu "${wpids[@]}") f1=$(proc_cpu "$fake_pid")
    stop_fake # flushes its log
    fake_calls "$fake_log" > "$work/calls"
    read -r calls unique first last mid_rate < <(sort -g "$work/calls" | awk '
        { t[NR] = $1; seen[$2 " " $3]++ }
        END {
            u = 0; for (k in seen) u++
            lo = int(NR * 0.1) + 1; hi = int(NR * 0.9)
            mid = (hi > lo && t[hi] > t[lo]) ? (hi - lo) / (t[hi] - t[lo]) : 0
            printf "%d %d %.6f %.6f %.1f\n", NR, u, t[1], t[NR], mid }')
    wall=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.2f", b - a }')
    rate=$(awk -v n="$calls" -v s="$wall" 'BEGIN { if (s > 0) printf "%.1f", (n - 1) / s; else print 0 }')
    run_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
    sent=0
    for i in $(seq 1 "$CHURCHES"); do
        db=$(printf 'tenant_bb%04d' "$i"); [ "$i" = 1 ] && db=$seed_db
        sent=$((sent + $(sql "$db" "SELECT coalesce(sum(sent), 0) FROM broadcasts WHERE status = 'done'")))
    done
    echo "throughput: $CHURCHES churches x $RECIPIENTS recipients, rate limits off (rate_per_min 0, daily_cap 0," \
         "max_per_second 0), max_in_flight 16 per worker, ${#wpids[@]} workers, no quiet hours, fake: $FAKE"
    echo "  $CHURCHES broadcasts created through POST /api/broadcasts ($created_retried answers 503 tried again;" \
         "the last created $created_at_late s after sendAt: < 0 is in time)"
    echo "  calls at the fake: $calls of $n expected, $unique distinct (church, recipient); broadcasts' sent: $sent;" \
         "drained: $([ "$drained" = 1 ] && echo yes || echo "NO (timeout ${DRAIN_TIMEOUT_S} s)")"
    echo "  first to last call: $wall s: $rate sends/s (middle 80% of the calls: $mid_rate sends/s); the first" \
         "call $(awk -v a="$at" -v b="$first" 'BEGIN { printf "%.1f", b - a }') s after sendAt"
    cpu_line=$(awk -v pa="$pg0" -v pb="$pg1" -v wa="$w0" -v wb="$w1" -v fa="$f0" -v fb="$f1" -v s="$run_s" 'BEGIN {
        printf "CPU over the %.1f s run: PostgreSQL %.1f s (%.0f%% of a core), workers %.1f s (%.0f%%), fake %.1f s (%.0f%%)",
            s, pb - pa, 100 * (pb - pa) / s, wb - wa, 100 * (wb - wa) / s, fb - fa, 100 * (fb - fa) / s }')
    echo "  $cpu_line"
    echo "  worker RSS (MiB, sampled every second): first / at a quarter, half, three quarters of the run / last / max"
    rss_lines=$(awk '{ if (!($2 in k)) order[++n] = $2; s[$2, ++k[$2]] = $3; if ($3 > max[$2]) max[$2] = $3 }
        function at(p, f) { i = int(k[p] * f); if (i < 1) i = 1; return s[p, i] / 1024 }
        END { for (j = 1; j <= n; j++) { p = order[j]
            printf "worker %s: %.1f / %.1f, %.1f, %.1f / %.1f / %.1f MiB\n", p, s[p, 1] / 1024,
                at(p, 0.25), at(p, 0.5), at(p, 0.75), s[p, k[p]] / 1024, max[p] / 1024 } }' "$work/rss")
    echo "$rss_lines" | sed 's/^/    /'
    if [ "$PGSS" = 1 ]; then pgss_report; fi
    stop_server
    summary+=("throughput: $rate sends/s handed to the fake (target >= $TARGET; ratio $(ratio "$rate" "$TARGET")); middle 80%: $mid_rate sends/s; $calls calls of $n, $unique distinct, sent $sent")
    summary+=("  $cpu_line")
    while read -r l; do summary+=("  RSS $l"); done <<< "$rss_lines"
fi

# --- 2. pacing ----------------------------------------------------------------------
if has_part rate; then
    fake_log=$work/fake-rate.log
    start_fake "$fake_log"
    write_config "$RATE_PER_MIN" 0 0
    start_server
    tok=$(tokens "Bench Rate ")
    [ "$(wc -l < "$tok")" = "$RATE_CHURCHES" ] || die "expected $RATE_CHURCHES tokens"
    n=$((RATE_CHURCHES * RATE_RECIPIENTS))
    at=$(( $(date +%s) + LEAD_S ))
    retried=0
    create_broadcasts "$tok" "$at" "$rate_list"
    echo "rate: the last broadcast created $created_late s after sendAt (< 0 is in time), $retried answers 503 tried again"
    while [ "$(date +%s)" -lt "$at" ]; do sleep 0.1; done
    wait_drain "$n" "$at"
    stop_fake
    fake_calls "$fake_log" > "$work/calls"
    ideal=$(awk -v n="$RATE_RECIPIENTS" -v r="$RATE_PER_MIN" 'BEGIN { printf "%.1f", n * 60 / r }')
    echo "rate: $RATE_CHURCHES churches x $RATE_RECIPIENTS recipients, rate_per_min $RATE_PER_MIN (daily_cap 0," \
         "max_per_second 0), no quiet hours; drained: $([ "$drained" = 1 ] && echo yes || echo "NO (timeout ${DRAIN_TIMEOUT_S} s)")"
    echo "  per church: calls, the most in any 60-second window, sendAt to last call (ideal $ideal s), ratio"
    # per church (the from number): calls, the largest 60-second window
    # (two pointers over its sorted times), seconds from sendAt to the last
    sort -k2,2 -k1,1g "$work/calls" | awk -v at="$at" -v ideal="$ideal" '
        function flush(   i, j, best) {
            if (n == 0) return
            best = 0; j = 1
            for (i = 1; i <= n; i++) { while (t[i] - t[j] >= 60) j++; if (i - j + 1 > best) best = i - j + 1 }
            printf "%s %d %d %.1f %.3f\n", from, n, best, t[n] - at, (t[n] - at) / ideal
            n = 0
        }
        $2 != from { flush(); from = $2 }
        { t[++n] = $1 }
        END { flush() }' > "$work/windows"
    sed 's/^/    /' "$work/windows"
    read -r churches worst_window worst_ratio mean_ratio total < <(awk '
        { c++; if ($3 > w) w = $3; if ($5 > r) r = $5; s += $5; n += $2 }
        END { printf "%d %d %.3f %.3f %d\n", c, w, r, c ? s / c : 0, n }' "$work/windows")
    verdict=ok
    [ "$worst_window" -le "$RATE_PER_MIN" ] || verdict=EXCEEDED
    stop_server
    line="rate: $churches churches, $total calls of $n; the most calls of one church in any 60 s: $worst_window"
    line="$line (limit $RATE_PER_MIN: $verdict); sendAt to last call vs ideal $ideal s: worst ratio $worst_ratio,"
    summary+=("$line mean $mean_ratio")
fi

errors=$(grep -c '"level":"error"' "$work/log" || true)
warns=$(grep -c '"level":"warn"' "$work/log" || true)
echo "server log: $errors error lines, $warns warn lines"
if [ "$errors" != 0 ] || [ "$warns" != 0 ]; then # their messages, most frequent first
    grep -E '"level":"(warn|error)"' "$work/log" | sed -E 's/.*"level":"([a-z]+)".*"msg":"(([^"\\]|\\.)*)".*/\1: \2/' |
        sort | uniq -c | sort -rn | head -5
fi
summary+=("server log: $errors error lines, $warns warn lines")

echo "--- summary ---"
printf '%s\n' "${summary[@]}"
