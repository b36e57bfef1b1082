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
#    (?q=First123&limit=100, about 111 matches) in a church of CONTACTS
#    contacts (default 100,000): wrk, 2 threads, 64 connections, WRK_S
#    seconds each (default 10); req/s and p99. The search's plan is printed
#    (EXPLAIN), with whether it uses a name-prefix index.
# (The STOP webhook against an ordinary inbound message is not measured yet.)
#
#   ROWS=50000 ROUNDS=3 KEEP=1 PGPORT_BENCH=5439 bash spec/bench/bench_contacts.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-50000}
ROUNDS=${ROUNDS:-3}
CONTACTS=${CONTACTS:-100000}
WRK_S=${WRK_S:-10}
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

# --- cluster and server ------------------------------------------------------------
bash scripts/pg.sh --dir "$PGDIR" --port "$PORT_PG" start
export DATABASE_URL
DATABASE_URL=$(bash scripts/pg.sh --dir "$PGDIR" --port "$PORT_PG" url)
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

port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
base=http://127.0.0.1:$port
cat > "$work/config.lua" <<CFG
return { port = $port, workers = 1, log = { level = "warn" }, limits = { request_timeout_s = 120 },
         db = { statement_timeout_ms = 120000 } }
CFG
"$BIN" serve --config "$work/config.lua" 2>>"$work/log" &
pid=$!
for _ in $(seq 100); do
    curl -sf "$base/health" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "the server exited at start-up"
    sleep 0.1
done
curl -sf "$base/health" >/dev/null || die "the server did not start"

register() { # round what → the response file
    local out=$work/reg-$2-$1 status
    status=$(curl -s -o "$out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data \
        "$(printf '{"churchName":"Bench Church %d","email":"%s%d-%s@bench.example","password":"%s","adminName":"Bench Admin"}' \
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

# --- contacts page and name-prefix search --------------------------------------------
reg=$(register 0 page)
token=$(json_field "$reg" accessToken)
page_db=$(tenant_db "$reg")
sql "$page_db" "INSERT INTO contacts (phone_number, first_name, last_name, created_at)
    SELECT '+1555' || lpad((3000000 + i)::text, 7, '0'), 'First' || i, 'Last' || i,
           now() - make_interval(secs => $CONTACTS - i)
    FROM generate_series(1, $CONTACTS) i" >/dev/null
sql "$page_db" "ANALYZE contacts" >/dev/null
# the statement the route runs for ?q=First123 (lua/contacts/store.lua), its plan
plan=$(sql "$page_db" "EXPLAIN SELECT c.id FROM contacts c WHERE c.deleted_at IS NULL
    AND (lower(c.first_name) LIKE lower('First123') || '%' OR lower(c.last_name) LIKE lower('First123') || '%')
    ORDER BY c.created_at, c.id LIMIT 101")
echo "search plan (q=First123):"
echo "$plan" | sed 's/^/    /'
if grep -q '_name_prefix' <<< "$plan"; then echo "the search uses a name-prefix index"
else echo "NOTE: the search does not use a name-prefix index"; fi
for path in "/api/contacts?limit=100" "/api/contacts?q=First123&limit=100"; do
    n=$(curl -sf -H "Authorization: Bearer $token" "$base$path" |
        lua5.4 -e 'print(#require("cjson").decode(io.read("a")).contacts)') || die "GET $path failed"
    [ "$n" -gt 0 ] || die "GET $path answered no contacts"
    wrk -t2 -c64 -d"${WRK_S}s" --timeout 10s --latency -H "Authorization: Bearer $token" "$base$path" \
        > "$work/wrk" 2>&1 || die "wrk failed: $(cat "$work/wrk")"
    read -r rps p99 _ < <(wrk_summary "$work/wrk")
    bad=$(awk '/^  Non-2xx/ { print $NF } END { }' "$work/wrk")
    echo "GET $path with $CONTACTS contacts ($n answered): $rps req/s, p99 $p99 ms, non-2xx ${bad:-0}"
done
