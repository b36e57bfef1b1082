# shellcheck shell=bash
# Many churches for the benches, made fast (sourced by bench_tenants.sh,
# bench_contacts.sh and bench_cluster.sh): one registered through the API,
# the others copied from its database in SQL (CREATE DATABASE ... TEMPLATE)
# and entered in the registry; their owners' access tokens minted by a bench
# route (bench_routes.lua). The caller has its cluster running and defines work
# (its directory), base (the server's URL), PASSWORD, sql (database sql →
# rows), die, start_server and stop_server (the server on the scripts of
# $work/lua, pid in $pid).
#
#   bench_scripts
#       copies lua/ to $work/lua with the bench routes
#   seed_churches N JOBS PHONE [FILL]
#       with the server running: registers "Bench Church 0001" (number PHONE),
#       stops the server, runs the function FILL on its database (optional:
#       what every church should hold), copies that database N - 1 times
#       (tenant_bt0002 ..., JOBS sessions at once) and enters the copies in
#       the registry as "Bench Church 0002" ... (active, no number). Prints the
#       seeding time; sets seed_db and admin (the owner, in every copy).
#       Leaves the server stopped.
#   number_churches
#       gives the copies (no number yet) the numbers sign_webhooks.c posts to:
#       church i's is +1555 and i in 7 digits
#   mint_tokens FILE N
#       with the server running: the owner's access tokens of the N bench
#       churches, one a line, in the order of their names, into FILE

bench_scripts() {
    cp -r lua "$work/lua"
    cp spec/bench/bench_routes.lua "$work/lua/routes/bench.lua"
    sed -i 's/^    "ops",$/    "ops", "bench",/' "$work/lua/routes/init.lua"
}

seed_churches() {
    local n=$1 jobs=$2 phone=$3 fill=${4:-} t0 t1 f made
    curl -s -o "$work/reg" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data \
        "{\"churchName\":\"Bench Church 0001\",\"email\":\"owner-$$@bench.example\",\"password\":\"$PASSWORD\",\"adminName\":\"Bench Owner\",\"phoneNumber\":\"$phone\"}" \
        "$base/api/auth/register" > "$work/reg_status"
    [ "$(cat "$work/reg_status")" = 201 ] || die "registering church 1 answered $(cat "$work/reg_status"): $(cat "$work/reg")"
    stop_server # no connection may stay on the database copied below
    seed_db=$(sql steeple "SELECT db_name FROM tenants WHERE church_name = 'Bench Church 0001'")
    admin=$(sql "$seed_db" "SELECT id FROM admins LIMIT 1")
    for _ in $(seq 100); do # the stopped server's backends are gone
        [ "$(sql steeple "SELECT count(*) FROM pg_stat_activity WHERE datname = '$seed_db'")" = 0 ] && break
        sleep 0.1
    done
    if [ -n "$fill" ]; then
        t0=$(date +%s.%N)
        "$fill" "$seed_db"
        t1=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "filled church 1 in %.1f s\n", b - a }'
    fi
    t0=$(date +%s.%N)
    for i in $(seq 2 "$n"); do
        printf 'CREATE DATABASE tenant_bt%04d TEMPLATE %s;\n' "$i" "$seed_db"
    done | split -n "r/$jobs" - "$work/create."
    for f in "$work"/create.*; do psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -f "$f" >/dev/null & done
    wait
    sql steeple "INSERT INTO tenants (church_name, status, db_server, db_name)
        SELECT 'Bench Church ' || lpad(i::text, 4, '0'), 'active', 'main', 'tenant_bt' || lpad(i::text, 4, '0')
        FROM generate_series(2, $n) AS i" >/dev/null
    t1=$(date +%s.%N)
    made=$(sql steeple "SELECT count(*) FROM tenants WHERE starts_with(church_name, 'Bench Church ')")
    [ "$made" = "$n" ] || die "expected $n churches, found $made"
    awk -v a="$t0" -v b="$t1" -v n="$n" -v j="$jobs" 'BEGIN {
        printf "seeded %d churches: 1 registered, %d copied from its database (%d sessions) in %.1f s\n", n, n - 1, j, b - a }'
}

number_churches() {
    sql steeple "UPDATE tenants SET phone_number = '+1555' || lpad(substr(church_name, 14)::int::text, 7, '0')
        WHERE starts_with(church_name, 'Bench Church ') AND phone_number IS NULL" >/dev/null
}

mint_tokens() {
    curl -sf "$base/bench/tokens?prefix=Bench%20Church%20&admin=$admin" > "$1" || die "cannot mint tokens"
    [ "$(wc -l < "$1")" = "$2" ] || die "expected $2 tokens"
    curl -sf -H "Authorization: Bearer $(head -1 "$1")" "$base/api/me" >/dev/null || die "GET /api/me failed"
}
