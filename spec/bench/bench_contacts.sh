#!/usr/bin/env bash
# Contacts benchmarks, on a private cluster (var/bench-pg):
#  - CSV import: POST /api/contacts/import of ROWS generated rows (1% invalid
#    numbers, 1% repeated numbers, every 10th last name quoted with a comma
#    and a doubled quote, a BOM, CRLF), ?consent=opted_in&list=<id>, into a
#    fresh church each round (so every number is created), ROUNDS rounds.
#  - The baseline, as the issue words it: psql's \copy of the same file into
#    the same table, contacts, of another fresh church each round. A plain
#    \copy cannot take what the raw file holds (numbers to normalize, 1%
#    invalid, 1% repeated: the unique number refuses the whole file), so it
#    copies the same rows as the import stores them: the accepted rows, first
#    occurrence of each number, in E.164, with their names and the import's
#    consent (opted_in, source import), into contacts with all its indexes
#    and constraints. The old baseline (the raw file into a plain 4-column
#    table, the staging step alone) is printed beside it.
#    Prints each round's seconds, the best of each and the ratio
#    (target: import <= 2x psql \copy into contacts), and checks the counts
#    the import answered.
#  - GET /api/contacts?limit=100 (the first page) and a name-prefix search
#    (?q=First123&limit=100, 111 matches) against a server in its default
#    configuration (2 workers), CHURCHES churches (default 20) of CONTACTS
#    contacts each (default 100,000), made as bench_tenants.sh makes them
#    (spec/bench/churches.sh; the contacts seeded in SQL into the first, which
#    the others copy): wrk, 2 threads, 64 connections, WARM_S seconds of
#    warm-up then WRK_S seconds measured, the tokens spread uniformly over
#    1 church (the baseline) and over the CHURCHES churches: req/s, p99 and
#    the ratio CHURCHES/1. The plans of both statements are printed as the
#    route ran them (auto_explain, in one more church of the same contacts),
#    with whether the search uses a name-prefix index.
#  - Signed message.received webhooks spread over the CHURCHES churches (wrk,
#    64 connections, WEBHOOK_S seconds each): ordinary messages as
#    bench_messaging.sh sends them, then STOP from STOP_N contacts (each an
#    existing contact that opts out: stored, opted out, suppressed, the reply
#    queued, then sent to a stand-in of Telnyx's API in the bench routes):
#    stored webhooks/s of each and the ratio STOP/ordinary; the outcomes are
#    counted in the churches' databases.
#
#   ROWS=50000 ROUNDS=3 CONTACTS=100000 CHURCHES=20 WRK_S=10 WARM_S=5 WEBHOOK_S=10 \
#   STOP_N=20000 SEED_JOBS=4 KEEP=1 PGPORT_BENCH=5439 bash spec/bench/bench_contacts.sh
#
# IMPORT_ONLY=1 stops after the import rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-50000}
ROUNDS=${ROUNDS:-3}
CONTACTS=${CONTACTS:-100000}
WRK_S=${WRK_S:-10}
WARM_S=${WARM_S:-5}
CHURCHES=${CHURCHES:-20}
WEBHOOK_S=${WEBHOOK_S:-10}
SEED_JOBS=${SEED_JOBS:-4}
PORT_PG=${PGPORT_BENCH:-5439}
BIN=$PWD/build/steeple
PGDIR=var/bench-pg
PASSWORD=bench-password-123
run=$(date +%s)-$$
mkdir -p var
work=$(mktemp -d "$PWD/var/bench-contacts.XXXXXX")
pid=''
stop_server() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
cleanup() {
    stop_server
    bash scripts/pg.sh --dir "$PGDIR" --port "$PORT_PG" destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
server_log() { [ -f "$work/log" ] && { echo "--- last lines of the server log ($work/log):" >&2; tail -20 "$work/log" >&2; }; return 0; }
die() { echo "bench_contacts: $*" >&2; server_log; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
best() { sort -g | head -1; }
. spec/bench/wrk_summary.sh
. spec/bench/churches.sh
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# --- the file --------------------------------------------------------------------
awk -v rows="$ROWS" 'BEGIN {
    printf "\357\273\277phone,first_name,last_name,notes\r\n"
    for (i = 1; i <= rows; i++) {
        n = 2000000 + i
        if (i % 100 == 0) phone = "555-12"                        # invalid
        else if (i % 100 == 50) phone = sprintf("+1555%07d", n - 1) # repeated
        else if (i % 3 == 0) phone = sprintf("(555) %03d-%04d", int(n / 10000), n % 10000)
        else if (i % 3 == 1) phone = sprintf("555-%03d-%04d", int(n / 10000), n % 10000)
        else phone = sprintf("+1555%07d", n)
        last = (i % 10 == 0) ? sprintf("\"Doe, \"\"Jr\"\" %d\"", i) : sprintf("Last%d", i)
        printf "%s,First%d,%s,note %d\r\n", phone, i, last, i
    }
}' > "$work/contacts.csv"
# the same rows as the import stores them, for psql's \copy into contacts
awk -v rows="$ROWS" 'BEGIN {
    for (i = 1; i <= rows; i++) {
        if (i % 100 == 0 || i % 100 == 50) continue # invalid, repeated
        last = (i % 10 == 0) ? sprintf("\"Doe, \"\"Jr\"\" %d\"", i) : sprintf("Last%d", i)
        printf "+1555%07d,First%d,%s,opted_in,import,2026-01-01 00:00:00+00\n", 2000000 + i, i, last
    }
}' > "$work/contacts-e164.csv"
expect_created=$((ROWS - ROWS / 100 - ROWS / 100))
expect_rejected=$((ROWS / 100))

. spec/bench/messaging_lib.sh
build_signer

# --- cluster and server ------------------------------------------------------------
start_bench_cluster --dir "$PGDIR" --port "$PORT_PG"

port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
base=http://127.0.0.1:$port
cat > "$work/config.lua" <<CFG
return { port = $port, workers = 1, log = { level = "warn" }, limits = { request_timeout_s = 120 },
         db = { statement_timeout_ms = 120000 } }
CFG
wait_health() {
    for _ in $(seq 100); do
        curl -sf "$base/health" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "the server exited at start-up"
        sleep 0.1
    done
    die "the server did not start"
}
"$BIN" serve --config "$work/config.lua" 2>>"$work/log" &
pid=$!
wait_health

register() { # round what → the response file
    local out=$work/reg-$2-$1 status
    status=$(curl -s -o "$out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data \
        "$(printf '{"churchName":"Import Church %d","email":"%s%d-%s@bench.example","password":"%s","adminName":"Bench Admin"}' \
            "$1" "$2" "$1" "$run" "$PASSWORD")" "$base/api/auth/register")
    [ "$status" = 201 ] || die "registration $2 $1 answered $status: $(cat "$out")"
    echo "$out"
}
json_field() { # file field
    FIELD=$2 lua5.4 -e 'print(require("cjson").decode(io.read("a"))[os.getenv("FIELD")])' < "$1"
}
tenant_db() { # registration file → the church's database
    psql "$DATABASE_URL" -XAtq -c "SELECT db_name FROM tenants WHERE id = '$(json_field "$1" tenantId)'"
}
copy_in() { # database table-and-columns file options → seconds
    local t0 t1
    t0=$(now)
    psql "$(db_url "$1")" -XAtq -v ON_ERROR_STOP=1 -c "\\copy $2 FROM '$3' WITH ($4)" >/dev/null
    t1=$(now)
    elapsed "$t0" "$t1"
}

import_times=()
copy_times=()
stage_times=()
for r in $(seq "$ROUNDS"); do
    reg=$(register "$r" import)
    token=$(json_field "$reg" accessToken)
    db=$(tenant_db "$reg")
    list=$(sql "$db" "INSERT INTO lists (name) VALUES ('Everyone') RETURNING id")
    sql "$db" "CREATE TABLE copy_baseline (phone text, first_name text, last_name text, notes text)" >/dev/null
    stage_times+=("$(copy_in "$db" copy_baseline "$work/contacts.csv" 'FORMAT csv, HEADER true')")
    copy_db=$(tenant_db "$(register "$r" copy)")
    copy_times+=("$(copy_in "$copy_db" 'contacts (phone_number, first_name, last_name, consent, consent_source, consent_at)' \
        "$work/contacts-e164.csv" 'FORMAT csv')")
    copied=$(sql "$copy_db" "SELECT count(*) FROM contacts")
    [ "$copied" = "$expect_created" ] || die "psql \\copy $r: $copied contacts, expected $expect_created"

    t0=$(now)
    status=$(curl -s -o "$work/import$r" -w '%{http_code}' -X POST -H 'Content-Type: text/csv' \
        -H "Authorization: Bearer $token" --data-binary "@$work/contacts.csv" \
        "$base/api/contacts/import?consent=opted_in&list=$list")
    t1=$(now)
    [ "$status" = 200 ] || die "import $r answered $status: $(head -c 300 "$work/import$r")"
    import_times+=("$(elapsed "$t0" "$t1")")
    read -r created rejected < <(lua5.4 -e 'local j = require("cjson").decode(io.read("a"))
        print(math.tointeger(j.created), #j.rejected)' < "$work/import$r")
    [ "$created" = "$expect_created" ] && [ "$rejected" = "$expect_rejected" ] ||
        die "import $r: created $created, rejected $rejected; expected $expect_created and $expect_rejected"
    members=$(sql "$db" "SELECT member_count FROM lists WHERE id = '$list'")
    [ "$members" = "$expect_created" ] || die "import $r: the list has $members members, expected $expect_created"
    echo "round $r: import ${import_times[-1]} s, psql \\copy into contacts ${copy_times[-1]} s," \
         "into a plain table ${stage_times[-1]} s"
done
best_import=$(printf '%s\n' "${import_times[@]}" | best)
best_copy=$(printf '%s\n' "${copy_times[@]}" | best)
best_stage=$(printf '%s\n' "${stage_times[@]}" | best)
echo "contacts import of $ROWS rows ($(du -k "$work/contacts.csv" | cut -f1) KiB; $expect_created created," \
     "$expect_rejected rejected): best ${best_import} s; psql \\copy of the same rows into contacts: best" \
     "${best_copy} s; ratio $(ratio "$best_import" "$best_copy") (target <= 2); psql \\copy of the raw file" \
     "into a plain table: best ${best_stage} s, ratio $(ratio "$best_import" "$best_stage")"
[ -z "${IMPORT_ONLY:-}" ] || exit 0

# --- many churches: contacts page, name-prefix search, STOP webhooks ---------------
stop_server
bench_scripts
export TELNYX_API_BASE=$base # replies go to the stand-in of POST /v2/messages (bench_routes.lua)
cat > "$work/config.lua" <<CFG
return { port = $port, log = { level = "warn" }, auth = { access_ttl_s = 86400 } }
CFG
start_server() {
    "$BIN" serve --config "$work/config.lua" --scripts "$work/lua" 2>>"$work/log" &
    pid=$!
    wait_health
}
fill_contacts() { # database: CONTACTS contacts, created a second apart, oldest first
    sql "$1" "INSERT INTO contacts (phone_number, first_name, last_name, created_at)
        SELECT '+1555' || lpad((3000000 + i)::text, 7, '0'), 'First' || i, 'Last' || i,
               now() - make_interval(secs => $CONTACTS - i)
        FROM generate_series(1, $CONTACTS) i" >/dev/null
    sql "$1" "ANALYZE contacts" >/dev/null
}
# churches 1..CHURCHES take the load; one more (the last) shows the plans
start_server
seed_churches $((CHURCHES + 1)) "$SEED_JOBS" +15550000001 fill_contacts
plan_db=$(printf 'tenant_bt%04d' $((CHURCHES + 1)))
number_churches
# every statement of the plan church's database has its plan in the cluster's log
sql steeple "ALTER DATABASE $plan_db SET session_preload_libraries = 'auto_explain'" >/dev/null
sql steeple "ALTER DATABASE $plan_db SET auto_explain.log_min_duration = 0" >/dev/null
start_server
mint_tokens "$work/tokens" $((CHURCHES + 1))
head -n 1 "$work/tokens" > "$work/tokens_1"
head -n "$CHURCHES" "$work/tokens" > "$work/tokens_n"
plan_token=$(tail -n 1 "$work/tokens")

run_wrk() { # out seconds tokens path
    BENCH_TOKENS=$3 BENCH_ZIPF=0 wrk -t2 -c64 -d"$2s" --timeout 10s --latency -s spec/bench/tokens.lua "$base$4" \
        > "$1" 2>&1 || die "wrk failed: $(cat "$1")"
}
PAGE="/api/contacts?limit=100"
SEARCH="/api/contacts?q=First123&limit=100"
# The plan of the statement a path runs on contacts (auto_explain, from the
# cluster's log): its nodes, one a line.
plan_of() { # path → plan lines
    local mark
    mark=$(wc -l < "$PGDIR/log")
    curl -sf -H "Authorization: Bearer $plan_token" "$base$1" >/dev/null || die "GET $1 failed"
    sleep 0.5
    tail -n +"$((mark + 1))" "$PGDIR/log" | awk '
        /^[0-9]{4}-/ { inplan = 0 }
        /Query Text: .*FROM contacts c WHERE/ { inplan = 1; n++; next }
        inplan && n == 1 && /\(cost=/ { sub(/^\t/, ""); sub(/  \(cost=.*/, ""); print }'
}
echo "plans with $CONTACTS contacts (auto_explain of the route's statement):"
search_plan=''
for path in "$PAGE" "$SEARCH"; do
    plan=$(plan_of "$path")
    [ -n "$plan" ] || die "no plan of GET $path in $PGDIR/log"
    echo "  GET $path:"
    echo "$plan" | sed 's/^/    /'
    [ "$path" != "$SEARCH" ] || search_plan=$plan
done
# the plan's scans of contacts, its top node above them
search_top="$(head -1 <<< "$search_plan" | sed -E 's/^ *(-> *)?//') over $(grep -oE \
    '(Seq|Index|Index Only|Bitmap Heap|Bitmap Index) Scan (using|on) [a-z_]+' <<< "$search_plan" |
    grep -v list_members | paste -sd, - | sed 's/,/, /g')"
if grep -q '_name_prefix' <<< "$search_plan"; then search_note="uses a name-prefix index"
else search_note="NOTE: does not use a name-prefix index"; fi
echo "search: $search_top; $search_note"

echo "wrk: 64 connections, 2 threads, ${WARM_S} s warm-up then ${WRK_S} s measured; default configuration" \
     "(2 workers), tokens spread uniformly over the churches"
printf '%-38s %-10s %9s %9s %8s %7s\n' "path" "churches" "req/s" "p99 ms" "non-2xx" "x1"
results=()
for path in "$PAGE" "$SEARCH"; do
    n=$(curl -sf -H "Authorization: Bearer $(head -1 "$work/tokens")" "$base$path" |
        lua5.4 -e 'print(#require("cjson").decode(io.read("a")).contacts)') || die "GET $path failed"
    [ "$n" -gt 0 ] || die "GET $path answered no contacts"
    one=''
    for tokens in tokens_1 tokens_n; do
        churches=$(wc -l < "$work/$tokens")
        run_wrk "$work/warm" "$WARM_S" "$work/$tokens" "$path"
        out="$work/wrk_$tokens${path//[\/?&=]/_}"
        run_wrk "$out" "$WRK_S" "$work/$tokens" "$path"
        read -r rps p99 _ bad detail < <(wrk_summary "$out")
        [ -n "$one" ] || one=$rps
        printf '%-38s %-10s %9s %9s %8s %7s%s\n' "$path" "$churches" "$rps" "$p99" "$bad" "$(ratio "$rps" "$one")" \
            "${detail:+ ($detail )}"
        results+=("GET $path ($n contacts answered), $churches church(es): $rps req/s, p99 $p99 ms, $bad non-2xx")
    done
    results+=("GET $path: $CHURCHES churches / 1 church: $(ratio "$rps" "$one")")
done

# --- STOP webhooks vs ordinary inbound messages --------------------------------------
# Both signed by sign_webhooks.c, spread over the CHURCHES churches. Ordinary:
# as bench_messaging.sh, contacts 1..300 of each church (every 16th from its
# contact 0). STOP: each from another contact of its church, each one a contact
# already (seeded below) that opts out: the message stored, the contact opted
# out, its number suppressed, the history row, the reply queued in the same
# transaction, then sent (to the stand-in API).
STOP_N=${STOP_N:-$((WEBHOOK_S * 2000))}
stop_contacts=$(( (STOP_N + CHURCHES - 1) / CHURCHES ))
tenant_dbs=()
for i in $(seq "$CHURCHES"); do tenant_dbs+=("$(sql steeple "SELECT db_name FROM tenants
    WHERE church_name = 'Bench Church $(printf %04d "$i")'")"); done
for i in $(seq "$CHURCHES"); do
    sql "${tenant_dbs[$((i - 1))]}" "WITH c AS (INSERT INTO contacts (phone_number)
            SELECT '+1666' || lpad('$((i - 1))', 3, '0') || lpad(k::text, 5, '0')
            FROM generate_series(0, $stop_contacts) k RETURNING id)
        INSERT INTO conversations (contact_id) SELECT id FROM c" >/dev/null
done
over_churches() { # sql → the sum of its one number over the churches' databases
    local total=0 db
    for db in "${tenant_dbs[@]}"; do total=$((total + $(sql "$db" "$1"))); done
    echo "$total"
}
spool_pending() { # webhooks spooled and not yet applied, over the workers
    curl -sf "$base/metrics" | awk '/^steeple_spool_pending/ { n += $2 } END { print n + 0 }'
}
outbox() { # replies not yet sent or failed
    over_churches "SELECT count(*) FROM messages WHERE direction = 'outbound' AND status IN ('queued', 'sending')"
}
settle() { # waits (up to 120 s) until the spool is applied and every reply is out
    local _i
    for _i in $(seq 240); do
        [ "$(spool_pending)" = 0 ] && [ "$(outbox)" = 0 ] && return 0
        sleep 0.5
    done
    echo "WARNING: after 120 s, $(spool_pending) webhooks still spooled, $(outbox) replies still queued" >&2
}
# name n contacts hot [text] → "stored/s req/s p99 stored spooled not-2xx detail" (stored: 200 "stored")
hooks() {
    "$work/sign_webhooks" "$work/hooks_$1" "$2" "$CHURCHES" "$3" "$4" "$run-$1" ${5:+"$5"} ||
        die "sign_webhooks failed"
    BENCH_WEBHOOKS=$work/hooks_$1 BENCH_THREADS=1 wrk -t1 -c64 -d"${WEBHOOK_S}s" --timeout 10s --latency \
        -s spec/bench/webhooks.lua "$base/api/webhooks/telnyx/messaging" > "$work/wrk_hooks_$1" 2>&1 ||
        die "wrk failed: $(cat "$work/wrk_hooks_$1")"
    local rps p99 bad detail n200 stored dur
    read -r rps p99 _ bad detail < <(wrk_summary "$work/wrk_hooks_$1")
    n200=$(awk '$1 == "status" && $2 == 200 { print $3 }' "$work/wrk_hooks_$1")
    stored=$((${n200:-0} - $(field duplicate "$work/wrk_hooks_$1")))
    dur=$(field duration_us "$work/wrk_hooks_$1")
    [ "$(field wrapped "$work/wrk_hooks_$1")" = 0 ] ||
        echo "NOTE: wrk went round the $2 $1 webhooks (duplicates): raise STOP_N" >&2
    echo "$(awk -v s="$stored" -v d="$dur" 'BEGIN { printf "%.1f", s / (d / 1e6) }') $rps $p99 $stored" \
         "$(field spooled "$work/wrk_hooks_$1") $bad${detail:+ $detail}"
}
echo "webhooks: wrk 64 connections, ${WEBHOOK_S} s each, $CHURCHES churches, default configuration (2 workers);" \
     "stored/s counts the answers 200 \"stored\" (a webhook whose database work takes over spool.after_ms is" \
     "spooled, answered 202 and applied later: counted apart, and applied before the next run)"
hooks plain $((WEBHOOK_S * 4000)) 300 16 > "$work/sum_plain"
read -r plain_rate plain_rps plain_p99 plain_n plain_spooled plain_bad plain_detail < "$work/sum_plain"
echo "ordinary inbound messages: stored ${plain_rate}/s (${plain_rps} req/s, p99 $plain_p99 ms; $plain_n stored," \
     "$plain_spooled spooled, $plain_bad not 2xx${plain_detail:+:$plain_detail})"
settle
hooks stop "$STOP_N" "$stop_contacts" 1000000000 STOP > "$work/sum_stop"
read -r stop_rate stop_rps stop_p99 stop_n stop_spooled stop_bad stop_detail < "$work/sum_stop"
settle
opted=$(over_churches "SELECT count(*) FROM contacts WHERE consent = 'opted_out' AND consent_source = 'keyword'")
suppressed=$(over_churches "SELECT count(*) FROM suppressions")
replies=$(over_churches "SELECT count(*) FROM messages WHERE direction = 'outbound'")
sent=$(over_churches "SELECT count(*) FROM messages WHERE direction = 'outbound' AND status = 'sent'")
echo "STOP: stored ${stop_rate}/s (${stop_rps} req/s, p99 $stop_p99 ms; $stop_n stored, $stop_spooled spooled," \
     "$stop_bad not 2xx${stop_detail:+:$stop_detail}); once settled: $opted contacts opted out by keyword," \
     "$suppressed numbers suppressed, $replies replies ($sent sent)"
[ "$opted" -ge $((stop_n + stop_spooled)) ] && [ "$replies" = "$opted" ] && [ "$suppressed" = "$opted" ] ||
    echo "WARNING: $stop_n STOPs stored and $stop_spooled spooled, but $opted opted out, $suppressed suppressed," \
         "$replies replies" >&2
stop_ratio=$(ratio "$stop_rate" "$plain_rate")
stop_server

errors=$(grep -c '"level":"error"' "$work/log" || true)
warns=$(grep -c '"level":"warn"' "$work/log" || true)
echo "server log: $errors error lines, $warns warn lines"
if [ "$errors" != 0 ] || [ "$warns" != 0 ]; then # their messages, most frequent first
    grep -E '"level":"(warn|error)"' "$work/log" | sed -E 's/.*"level":"([a-z]+)".*"msg":"(([^"\\]|\\.)*)".*/\1: \2/' |
        sort | uniq -c | sort -rn | head -5
fi

echo "--- summary ---"
echo "contacts import of $ROWS rows: best ${best_import} s; psql \\copy into contacts: best ${best_copy} s;" \
     "ratio $(ratio "$best_import" "$best_copy") (target <= 2)"
echo "search plan ($CONTACTS contacts, q=First123): $search_top; $search_note"
for r in "${results[@]}"; do echo "$r"; done
echo "webhooks stored, $CHURCHES churches, 64 connections: STOP ${stop_rate}/s ($stop_spooled spooled)," \
     "ordinary ${plain_rate}/s ($plain_spooled spooled); STOP/ordinary $stop_ratio"
