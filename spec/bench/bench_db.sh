#!/usr/bin/env bash
# Database benchmarks, in one run on a private cluster (var/bench-pg):
#  - N one-row queries through steeple.db in one request vs a synchronous
#    libpq loop in C on the same cluster (ratio);
#  - the first request to a tenant not yet in the pool LRU (p50/p99);
#  - CREATE DATABASE from the template vs an empty database plus the tenant
#    migrations (p50 each);
#  - `migrate tenants` over TENANTS databases with nothing to apply, then
#    with one new migration.
#
#   QUERIES=20000 TENANTS=1000 bash spec/bench/bench_db.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
QUERIES=${QUERIES:-20000}
TENANTS=${TENANTS:-1000}
BIN=$PWD/build/steeple
PGDIR=var/bench-pg
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    bash scripts/pg.sh --dir "$PGDIR" --port 5439 destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

bash scripts/pg.sh --dir "$PGDIR" --port 5439 start
export DATABASE_URL
DATABASE_URL=$(bash scripts/pg.sh --dir "$PGDIR" --port 5439 url)
export STEEPLE_TENANT_DATABASE_URLS=
"$BIN" migrate registry >/dev/null
"$BIN" migrate tenants >/dev/null

percentile() { # p < numbers on stdin
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; printf "%.2f", v[i] * 1000 }'
}

# --- queries: steeple.db vs synchronous libpq ---------------------------------
cc -O2 -o "$work/pg_sync_loop" spec/bench/pg_sync_loop.c $(pkg-config --cflags --libs libpq)
c_s=$("$work/pg_sync_loop" "$DATABASE_URL" "$QUERIES")

cp -r lua "$work/lua"
cp spec/bench/bench_routes.lua "$work/lua/routes/bench.lua"
sed -i 's/^    "ops",$/    "ops", "bench",/' "$work/lua/routes/init.lua"
port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
cat > "$work/config.lua" <<CFG
return { port = $port, workers = 1, log = { level = "warn" },
         limits = { request_timeout_s = 600 }, tenants = { capacity = 100 } }
CFG
"$BIN" serve --config "$work/config.lua" --scripts "$work/lua" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/bench/queries?n=100" >/dev/null # warm the pool
lua_s=$(curl -sf "http://127.0.0.1:$port/bench/queries?n=$QUERIES" | sed 's/.*"seconds":\([0-9.e-]*\).*/\1/')
awk -v c="$c_s" -v l="$lua_s" -v n="$QUERIES" 'BEGIN {
    printf "one-row queries: C sync libpq %.0f/s, steeple.db from Lua %.0f/s, ratio %.2f\n", n / c, n / l, c / l }'

# --- tenant databases ---------------------------------------------------------
{
    for i in $(seq "$TENANTS"); do echo "CREATE DATABASE tenant_bench$i TEMPLATE steeple_template;"; done
} > "$work/create.sql"
t0=$(date +%s.%N)
psql "$DATABASE_URL" -XAtq -f "$work/create.sql" >/dev/null
t1=$(date +%s.%N)
psql "$DATABASE_URL" -XAtq -c "INSERT INTO tenants (church_name, status, db_server, db_name)
    SELECT 'bench ' || i, 'active', 'main', 'tenant_bench' || i FROM generate_series(1, $TENANTS) AS i" >/dev/null
awk -v a="$t0" -v b="$t1" -v n="$TENANTS" 'BEGIN { printf "made %d tenant databases from the template in %.1f s\n", n, b - a }'

psql "$DATABASE_URL" -XAtq -c "SELECT id FROM tenants ORDER BY db_name LIMIT 200" > "$work/ids"
while read -r id; do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/bench/tenant/$id"
done < "$work/ids" > "$work/first"
while read -r id; do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/bench/tenant/$id"
done < <(tail -50 "$work/ids") > "$work/again"
echo "first request to a tenant not in the LRU: p50 $(percentile 50 < "$work/first") ms, p99 $(percentile 99 < "$work/first") ms" \
     "(a tenant already in it: p50 $(percentile 50 < "$work/again") ms)"

for how in template migrations; do
    for i in $(seq 20); do
        curl -sf -X POST -H 'Content-Type: application/json' \
            "http://127.0.0.1:$port/bench/create/tenant_c${how:0:1}$i?how=$how" |
            sed 's/.*"seconds":\([0-9.e-]*\).*/\1/'
    done > "$work/create_$how"
done
echo "CREATE DATABASE from the template: p50 $(percentile 50 < "$work/create_template") ms;" \
     "empty database + tenant migrations: p50 $(percentile 50 < "$work/create_migrations") ms"

# --- migrate tenants ----------------------------------------------------------
t0=$(date +%s.%N)
"$BIN" migrate tenants --concurrency 8 > "$work/migrate1"
t1=$(date +%s.%N)
tail -1 "$work/migrate1"
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "migrate tenants, nothing to apply: %.1f s (target <= 10 s)\n", b - a }'

cp -r sql "$work/sql"
echo "CREATE TABLE bench_new (id int);" > "$work/sql/tenant/9999_bench_new.sql"
sed -i 's/^}$/    "9999_bench_new.sql",\n}/' "$work/sql/tenant/init.lua"
echo "return { db = { migrations_dir = \"$work/sql\" } }" > "$work/migrate.lua"
t0=$(date +%s.%N)
"$BIN" migrate tenants --concurrency 8 --config "$work/migrate.lua" > "$work/migrate2"
t1=$(date +%s.%N)
tail -1 "$work/migrate2"
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "migrate tenants, one new migration: %.1f s\n", b - a }'
