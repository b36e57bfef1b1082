#!/usr/bin/env bash
# Messaging benchmarks, in one run on a private cluster (var/bench-pg):
#  - the spool (spool_rate.c on core/spool*.c, in a directory on the repo's
#    disk): durable appends/s with SPOOL_INFLIGHT appends in flight (group
#    commit) vs one at a time (one fdatasync per record), SPOOL_S seconds
#    each, and their ratio;
#  - signed `message.received` webhooks (wrk, 64 connections, WEBHOOK_S
#    seconds, --latency) against a server of WORKERS workers, spread over
#    CHURCHES churches, each request a distinct payload.id (a real insert):
#    req/s, p99, every status checked (200 "stored"; duplicates, spooled and
#    errors are counted) and the stored rows counted in the databases; then
#    pgbench on the same cluster (64 clients, -j 2, WEBHOOK_S seconds), one
#    INSERT of a message-sized row per transaction into a table shaped like
#    `messages`: tps, and the ratio stored webhooks/s / pgbench tps (target
#    >= 0.6). ROUNDS alternating rounds, the ratio taken over their sums.
#    For reference (SKIP_TX=1 leaves it out), pgbench also runs the webhook's
#    own SQL (events.lua: one INSERT whose trigger moves the conversation) in
#    a database made from the tenant template, which splits the ratio into
#    the SQL's cost and the server's;
#  - reading (wrk, 16 connections, READ_S seconds, --latency):
#    GET /api/conversations?limit=50 of a church with >= 200 conversations and
#    GET /api/conversations/{id}/messages?limit=50 of a conversation with
#    >= 100 messages, both filled by the webhooks above (topped up by SQL if
#    the webhook run was too short to fill them, which the output says).
# The webhooks are signed by sign_webhooks.c (libsodium, a fixed-seed key)
# right before each round (their timestamps must be within 300 s of now)
# and shuffled (senders in random order, not round the contact list):
# WEBHOOK_N requests (default WEBHOOK_S x 16000), more than wrk sends; if wrk
# goes round them, the duplicates are reported. The server log stays in the
# work directory (KEEP=1 keeps it); on failure its last lines are printed.
# Each round also reports the CPU seconds of the server (master and
# workers) and of PostgreSQL during the webhooks, per stored text, and of
# PostgreSQL during pgbench's runs, per transaction, and the WAL written
# during the webhooks per new message row.
# PGSS=1 loads pg_stat_statements in the cluster and prints, after each
# round's webhooks, the statements that took the database's time.
# The cluster's start, the server's environment and the signed webhooks' wrk
# run come from messaging_lib.sh (shared with bench_cluster.sh).
#
#   WEBHOOK_S=10 READ_S=10 SPOOL_S=5 SPOOL_INFLIGHT=64 CHURCHES=10 WORKERS=2 \
#   ROUNDS=1 WEBHOOK_N=160000 SKIP_TX= KEEP=1 PGSS= bash spec/bench/bench_messaging.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
WEBHOOK_S=${WEBHOOK_S:-10}
READ_S=${READ_S:-10}
SPOOL_S=${SPOOL_S:-5}
SPOOL_INFLIGHT=${SPOOL_INFLIGHT:-64}
CHURCHES=${CHURCHES:-10}
WORKERS=${WORKERS:-2}
ROUNDS=${ROUNDS:-1}
WEBHOOK_N=${WEBHOOK_N:-$((WEBHOOK_S * 16000))}
CONTACTS=300  # regular contacts per church (each one conversation)
HOT_EVERY=16  # every 16th webhook of a church comes from its contact 0
BIN=$PWD/build/steeple
PGDIR=var/bench-pg
PASSWORD=bench-password-123
run=$(date +%s)-$$
mkdir -p var
work=$(mktemp -d "$PWD/var/bench-messaging.XXXXXX") # on the repo's disk, not a tmpfs
pid=''
stop_server() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
cleanup() {
    stop_server
    bash scripts/pg.sh --dir "$PGDIR" --port 5439 destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
server_log() { [ -f "$work/log" ] && { echo "--- last lines of the server log ($work/log):" >&2; tail -20 "$work/log" >&2; }; return 0; }
die() { echo "bench_messaging: $*" >&2; server_log; exit 1; }

percentile() { # p < numbers on stdin
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; printf "%.2f", v[i] * 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }
cpu_use() { # cpu0 cpu1 t0 t1 n → "S s (P% of a core), U µs"
    awk -v c="$(awk -v a="$1" -v b="$2" 'BEGIN { print b - a }')" -v w="$(awk -v a="$3" -v b="$4" 'BEGIN { print b - a }')" \
        -v n="$5" 'BEGIN { printf "%.1f s (%.0f%% of a core), %.0f µs", c, 100 * c / w, (n > 0 ? 1e6 * c / n : 0) }'
}

CFLAGS_BENCH="-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-align -Wwrite-strings
    -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 -Wno-unused-parameter"
# shellcheck disable=SC2086,SC2046
cc $CFLAGS_BENCH -Icore -o "$work/spool_rate" spec/bench/spool_rate.c core/spool*.c core/log.c \
    $(pkg-config --cflags --libs libevent) -lpthread
. spec/bench/messaging_lib.sh
. spec/bench/cpu_lib.sh
build_signer

# --- the spool: group commit vs one fdatasync per record ----------------------
# Before the cluster starts, so no PostgreSQL checkpoint shares the disk.
read -r spool_group spool_group_n spool_group_fsyncs _ < <("$work/spool_rate" "$work/spool-group" "$SPOOL_S" "$SPOOL_INFLIGHT") ||
    die "spool_rate ($SPOOL_INFLIGHT in flight) failed"
read -r spool_one spool_one_n spool_one_fsyncs _ < <("$work/spool_rate" "$work/spool-one" "$SPOOL_S" 1) ||
    die "spool_rate (one at a time) failed"
rm -rf "$work/spool-group" "$work/spool-one"
spool_ratio=$(ratio "$spool_group" "$spool_one")
echo "spool appends (600 B, ${SPOOL_S} s each, $(df --output=source "$work" | tail -1)):" \
     "$SPOOL_INFLIGHT in flight (group commit) ${spool_group}/s" \
     "($spool_group_n appends, $spool_group_fsyncs fdatasyncs, $(ratio "$spool_group_n" "$spool_group_fsyncs") per fdatasync);" \
     "one at a time ${spool_one}/s ($spool_one_n appends, $spool_one_fsyncs fdatasyncs); ratio $spool_ratio"

# --- cluster and server --------------------------------------------------------
start_bench_cluster --dir "$PGDIR" --port 5439

port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
cat > "$work/config.lua" <<CFG
return { port = $port, workers = $WORKERS, log = { level = "warn" },
         tenants = { max_provisioning = $CHURCHES },
         db = { server_max_connections = 200 } }
CFG
"$BIN" serve --config "$work/config.lua" 2>>"$work/log" &
pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -sf "$base/health" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "the server exited at start-up"
    sleep 0.1
done
curl -sf "$base/health" >/dev/null || die "the server did not start"

# CHURCHES registrations at once; church i (1-based) has the number +1555 and i in 7 digits.
regs=()
for i in $(seq "$CHURCHES"); do
    curl -s -o "$work/reg_body$i" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data \
        "$(printf '{"churchName":"Bench Church %d","email":"church%d-%s@bench.example","password":"%s","adminName":"Bench Admin","phoneNumber":"+1555%07d"}' \
            "$i" "$i" "$run" "$PASSWORD" "$i")" \
        "$base/api/auth/register" > "$work/reg_status$i" &
    regs+=($!)
done
for p in "${regs[@]}"; do wait "$p" || true; done
for i in $(seq "$CHURCHES"); do
    [ "$(cat "$work/reg_status$i")" = 201 ] ||
        die "registering church $i answered $(cat "$work/reg_status$i"): $(cat "$work/reg_body$i")"
done
token=$(sed 's/.*"accessToken":"\([^"]*\)".*/\1/' "$work/reg_body1")
mapfile -t tenant_dbs < <(sql steeple "SELECT db_name FROM tenants WHERE phone_number LIKE '+1555%' ORDER BY phone_number")
[ "${#tenant_dbs[@]}" = "$CHURCHES" ] || die "expected $CHURCHES tenant databases, found ${#tenant_dbs[@]}"
stored_rows() { # messages over every bench church's database
    local total=0 db
    for db in "${tenant_dbs[@]}"; do total=$((total + $(sql "$db" "SELECT count(*) FROM messages"))); done
    echo "$total"
}

# pgbench's table: the shape of `messages` (same columns, defaults and indexes, no foreign key).
sql steeple "CREATE DATABASE bench_insert" >/dev/null
sql bench_insert "
    CREATE TABLE bench_messages (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        conversation_id uuid NOT NULL,
        direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
        from_number text NOT NULL,
        to_number text NOT NULL,
        text text NOT NULL DEFAULT '',
        media jsonb NOT NULL DEFAULT '[]',
        status text NOT NULL,
        provider_message_id text UNIQUE,
        send_attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now());
    CREATE INDEX ON bench_messages (conversation_id, created_at DESC, id DESC);
    CREATE SEQUENCE bench_pmid;" >/dev/null
cat > "$work/insert.sql" <<'SQL'
\set c random(1, 3000)
INSERT INTO bench_messages (conversation_id, direction, from_number, to_number, text, media, status, provider_message_id)
VALUES (md5(:c::text)::uuid, 'inbound', '+166600012345', '+15550000001',
        'Bench message 0000000001: see you at the service on Sunday morning, and thank you for the flowers!',
        '[]', 'received', 'pgb-' || nextval('bench_pmid'));
SQL
# For reference: the webhook's own SQL (lua/messaging/events.lua, store_received)
# in a database made from the tenant template, for 3,000 contacts whose
# conversations exist (the server knows them then): one INSERT of the message,
# whose trigger moves the conversation (0004_conversation_counters.sql). The
# conversation id comes from a small keyed table, as the server has it cached.
sql steeple "CREATE DATABASE bench_webhook_tx TEMPLATE steeple_template" >/dev/null
sql bench_webhook_tx "CREATE SEQUENCE bench_pmid;
    CREATE TABLE bench_conv (k integer PRIMARY KEY, id uuid NOT NULL);
    WITH c AS (INSERT INTO contacts (phone_number)
               SELECT '+1666' || lpad(k::text, 8, '0') FROM generate_series(1, 3000) AS k RETURNING id, phone_number),
         v AS (INSERT INTO conversations (contact_id) SELECT id FROM c RETURNING id, contact_id)
    INSERT INTO bench_conv SELECT substr(c.phone_number, 6)::integer, v.id FROM v JOIN c ON c.id = v.contact_id" \
    >/dev/null
cat > "$work/webhook_tx.sql" <<'SQL'
\set k random(1, 3000)
INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media,
                      status, provider_message_id)
SELECT id, 'inbound', '+1666' || lpad(:k::text, 8, '0'), '+15550000001',
       'Bench message 0000000001: see you at the service on Sunday morning, and thank you for the flowers!',
       '[]'::jsonb, 'received', 'pgb-' || nextval('bench_pmid')
FROM bench_conv WHERE k = :k
ON CONFLICT (provider_message_id) DO NOTHING
RETURNING id;
SQL

# wrk script: spec/bench/webhooks.lua (signed requests of a file, statuses, duplicates, spooled).

# wrk script for GETs with the token: counts statuses like webhooks.lua.
cat > "$work/get.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function init() statuses = {} end
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary)
    local total = {}
    for _, t in ipairs(threads) do
        for code, c in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + c end
    end
    for code, c in pairs(total) do print("status " .. code .. " " .. c) end
    print("duration_us " .. summary.duration)
    print("timeouts " .. summary.errors.timeout)
end
LUA

# wrk output → "req_per_s p50_ms p99_ms n200 other detail" (other: responses that are not 200)
wrk_summary() {
    awk 'function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0 }
         $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
         $1 == "status" { n[$2] = $3 }
         $1 == "timeouts" { to = $2 }
         /^Requests\/sec:/ { rps = $2 }
         /Socket errors:/ { sock = $0 }
         END {
             other = 0; detail = ""
             for (c in n) if (c != 200) { other += n[c]; detail = detail " " c "x" n[c] }
             if (to > 0) detail = detail " timeouts x" to
             if (sock != "") { gsub(/ /, "", sock); detail = detail " " sock }
             printf "%.1f %.3f %.3f %d %d%s\n", rps, p50, p99, n[200] + 0, other, detail
         }' "$1"
}

# --- webhooks vs pgbench ---------------------------------------------------------
echo "webhooks: wrk 64 connections, ${WEBHOOK_S} s, $WORKERS workers, $CHURCHES churches;" \
     "pgbench: 64 clients, -j 2, ${WEBHOOK_S} s, one INSERT per transaction"
hook_sum=0 pgb_sum=0 tx_sum=0 bad_total=0 dup_total=0 stored_total=0
for round in $(seq "$ROUNDS"); do
    "$work/sign_webhooks" "$work/webhooks" "$WEBHOOK_N" "$CHURCHES" "$CONTACTS" "$HOT_EVERY" "$run-$round" ||
        die "sign_webhooks failed"
    # senders in random order, as texts come: in the signer's order (contacts
    # round the list) the texts in flight always came from consecutive senders
    shuf -o "$work/webhooks" "$work/webhooks"
    before=$(stored_rows)
    if [ "${PGSS:-}" = 1 ]; then pgss_reset; fi
    mapfile -t wpids < <(ps -o pid= --ppid "$pid" | tr -d " ")
    wal0=$(sql steeple "SELECT pg_current_wal_lsn()")
    t0=$(date +%s.%N) pg0=$(pg_cpu "$PGDIR") s0=$(proc_cpu "$pid" "${wpids[@]}")
    post_webhooks "$work/wrk_hooks$round" "$WEBHOOK_S" 1 "$work/webhooks" "$base/api/webhooks/telnyx/messaging"
    t1=$(date +%s.%N) pg1=$(pg_cpu "$PGDIR") s1=$(proc_cpu "$pid" "${wpids[@]}")
    read -r rps _ p99 _ other detail < <(wrk_summary "$work/wrk_hooks$round")
    read -r stored stored_rate dup _ wrapped < <(webhooks_stored "$work/wrk_hooks$round")
    sleep 1 # requests cut off by wrk's stop may still commit
    rows=$(( $(stored_rows) - before ))
    wal=$(sql steeple "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
    if [ "$dup" = 0 ] && [ "$other" = 0 ]; then
        note="every response 200 \"stored\""
    else
        note="$dup duplicates, $other not 200"
        [ "$dup" = 0 ] || note="$note; wrk went round the $WEBHOOK_N requests $wrapped times, raise WEBHOOK_N"
        [ "$other" = 0 ] || note="$note:$detail"
    fi
    echo "round $round: webhooks: ${rps} req/s, p99 $p99 ms; stored ${stored_rate}/s ($stored stored, $note);" \
         "$rows new rows in the databases"
    bad_total=$((bad_total + other)) dup_total=$((dup_total + dup)) stored_total=$((stored_total + stored))
    [ "$rows" -ge "$stored" ] || echo "round $round: WARNING: $stored answered stored but only $rows new rows" >&2
    [ "$stored" -gt 0 ] || die "no webhook was stored"
    echo "round $round: CPU over the webhooks' $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s:" \
         "server $(cpu_use "$s0" "$s1" "$t0" "$t1" "$stored") a stored text," \
         "PostgreSQL $(cpu_use "$pg0" "$pg1" "$t0" "$t1" "$stored") a stored text;" \
         "WAL $(awk -v w="$wal" -v n="$rows" 'BEGIN { printf "%.0f", w / n }') bytes a new row"
    if [ "${PGSS:-}" = 1 ]; then pgss_report; fi

    t0=$(date +%s.%N) pg0=$(pg_cpu "$PGDIR")
    pgbench -n -M prepared -c 64 -j 2 -T "$WEBHOOK_S" -f "$work/insert.sql" "$(db_url bench_insert)" \
        > "$work/pgbench$round" 2>&1 || die "pgbench failed: $(cat "$work/pgbench$round")"
    t1=$(date +%s.%N)
    sleep 1 # pgbench's backends end: the postmaster reaps them and counts their CPU
    pg1=$(pg_cpu "$PGDIR")
    tps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench$round")
    ptx=$(awk '/number of transactions actually processed:/ { print $6 }' "$work/pgbench$round")
    pfail=$(awk '/number of failed transactions:/ { print $5 }' "$work/pgbench$round")
    plat=$(awk '/^latency average/ { print $4 }' "$work/pgbench$round")
    echo "round $round: pgbench INSERT: $tps tps (latency average $plat ms, ${pfail:-0} failed;" \
         "PostgreSQL $(cpu_use "$pg0" "$pg1" "$t0" "$t1" "$ptx") a transaction);" \
         "stored webhooks/pgbench $(ratio "$stored_rate" "$tps")"
    hook_sum=$(sum "$hook_sum" "$stored_rate") pgb_sum=$(sum "$pgb_sum" "$tps")

    if [ -z "${SKIP_TX:-}" ]; then
        t0=$(date +%s.%N) pg0=$(pg_cpu "$PGDIR")
        pgbench -n -M prepared -c 64 -j 2 -T "$WEBHOOK_S" -f "$work/webhook_tx.sql" "$(db_url bench_webhook_tx)" \
            > "$work/pgbench_tx$round" 2>&1 || die "pgbench (webhook transaction) failed: $(cat "$work/pgbench_tx$round")"
        t1=$(date +%s.%N)
        sleep 1
        pg1=$(pg_cpu "$PGDIR")
        txtps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench_tx$round")
        ptx=$(awk '/number of transactions actually processed:/ { print $6 }' "$work/pgbench_tx$round")
        pfail=$(awk '/number of failed transactions:/ { print $5 }' "$work/pgbench_tx$round")
        echo "round $round: for reference, pgbench running the webhook's own transaction (one database):" \
             "$txtps tps (${pfail:-0} failed; PostgreSQL $(cpu_use "$pg0" "$pg1" "$t0" "$t1" "$ptx") a transaction);" \
             "stored webhooks/that $(ratio "$stored_rate" "$txtps")"
        tx_sum=$(sum "$tx_sum" "$txtps")
    fi
done
hook_ratio=$(ratio "$hook_sum" "$pgb_sum")
echo "webhooks over $ROUNDS round(s): stored $(ratio "$hook_sum" "$ROUNDS")/s, pgbench $(ratio "$pgb_sum" "$ROUNDS") tps;" \
     "ratio $hook_ratio (target >= 0.6)"

# --- reading conversations -------------------------------------------------------
read_db=${tenant_dbs[0]}
nconv=$(sql "$read_db" "SELECT count(*) FROM conversations")
hot=$(sql "$read_db" "SELECT conversation_id, count(*) FROM messages
    GROUP BY conversation_id ORDER BY count(*) DESC LIMIT 1")
[ -n "$hot" ] || die "church 1 has no messages"
hot_id=${hot%|*} hot_n=${hot#*|}
seeded=''
if [ "$nconv" -lt 200 ]; then
    sql "$read_db" "
        WITH k AS (INSERT INTO contacts (phone_number)
                   SELECT '+1777' || lpad(g::text, 7, '0') FROM generate_series(1, $((200 - nconv))) AS g RETURNING id)
        INSERT INTO conversations (contact_id, last_message_at, last_message_preview)
        SELECT id, now() - random() * interval '1 hour', 'seeded' FROM k" >/dev/null
    seeded="$seeded $((200 - nconv)) conversations"
    nconv=200
fi
if [ "$hot_n" -lt 100 ]; then
    sql "$read_db" "
        INSERT INTO messages (conversation_id, direction, from_number, to_number, text, status, provider_message_id)
        SELECT '$hot_id', 'inbound', '+166600000000', '+15550000001', 'seeded message ' || g, 'received',
               'seed-' || g FROM generate_series(1, $((100 - hot_n))) AS g" >/dev/null
    seeded="$seeded $((100 - hot_n)) messages"
    hot_n=100
fi
[ -z "$seeded" ] && seeded="all from the webhooks" || seeded="topped up by SQL:$seeded"
curl -sf -H "Authorization: Bearer $token" "$base/api/conversations?limit=50" > "$work/page" ||
    die "GET /api/conversations failed"
[ "$(grep -o '"contactPhone"' "$work/page" | wc -l)" = 50 ] || die "the conversation page has not 50 rows: $(head -c 300 "$work/page")"
list_bytes=$(wc -c < "$work/page")
curl -sf -H "Authorization: Bearer $token" "$base/api/conversations/$hot_id/messages?limit=50" > "$work/page" ||
    die "GET /api/conversations/$hot_id/messages failed"
[ "$(grep -o '"providerMessageId"' "$work/page" | wc -l)" = 50 ] || die "the message page has not 50 rows: $(head -c 300 "$work/page")"
msg_bytes=$(wc -c < "$work/page")

read_wrk() { # name path → the wrk_summary line
    wrk -t1 -c16 -d"${READ_S}s" --timeout 10s --latency -s "$work/get.lua" "$base$2" > "$work/wrk_$1" 2>&1 ||
        die "wrk failed: $(cat "$work/wrk_$1")"
    wrk_summary "$work/wrk_$1"
}
read_line() { # label rps p50 p99 n200 other detail
    local label=$1 rps=$2 p50=$3 p99=$4 n200=$5 other=$6
    shift 6
    local note="all $n200 200"
    [ "$other" = 0 ] || note="$n200 200, $other not 200:$*"
    echo "$label: ${rps} req/s, p50 $p50 ms, p99 $p99 ms ($note)"
}
echo "reads: wrk 16 connections, ${READ_S} s; church 1 has $nconv conversations, the longest $hot_n messages ($seeded)"
read -r list_rps list_p50 list_p99 n200 other detail < <(read_wrk list "/api/conversations?limit=50")
read_line "GET /api/conversations?limit=50 ($list_bytes B body)" "$list_rps" "$list_p50" "$list_p99" "$n200" "$other" "$detail"
bad_total=$((bad_total + other))
read -r msg_rps msg_p50 msg_p99 n200 other detail < <(read_wrk messages "/api/conversations/$hot_id/messages?limit=50")
read_line "GET /api/conversations/{id}/messages?limit=50 ($msg_bytes B body)" "$msg_rps" "$msg_p50" "$msg_p99" "$n200" "$other" "$detail"
bad_total=$((bad_total + other))
stop_server

spooled=$(find "$work/spool" -name '*.spool' -size +0c 2>/dev/null | wc -l)
errors=$(grep -c '"level":"error"' "$work/log" || true)
warns=$(grep -c '"level":"warn"' "$work/log" || true)
echo "server log: $errors error lines, $warns warn lines; non-empty spool segments left: $spooled"
if [ "$errors" != 0 ] || [ "$warns" != 0 ]; then # their messages, most frequent first
    grep -E '"level":"(warn|error)"' "$work/log" | sed -E 's/.*"level":"([a-z]+)".*"msg":"(([^"\\]|\\.)*)".*/\1: \2/' |
        sort | uniq -c | sort -rn | head -5
fi
if [ "$errors" != 0 ] || [ "$bad_total" != 0 ]; then server_log; fi

echo "--- summary ---"
echo "spool appends, $SPOOL_INFLIGHT in flight/one at a time: $spool_group/s / $spool_one/s = $spool_ratio"
echo "stored webhooks/pgbench INSERT tps (64 connections, $ROUNDS round(s)): $(ratio "$hook_sum" "$ROUNDS")/s /" \
     "$(ratio "$pgb_sum" "$ROUNDS") = $hook_ratio (target >= 0.6)"
echo "GET /api/conversations?limit=50: $list_rps req/s, p99 $list_p99 ms;" \
     "GET …/messages?limit=50: $msg_rps req/s, p99 $msg_p99 ms"
[ -n "${SKIP_TX:-}" ] || echo "stored webhooks/pgbench of the webhook's own transaction: $(ratio "$hook_sum" "$tx_sum")"
echo "unexpected responses: $bad_total; duplicates: $dup_total; stored: $stored_total"
