# shellcheck shell=bash
# The private cluster, the server's environment and signed webhooks, for the
# benches that post `message.received` webhooks (sourced by
# bench_messaging.sh and bench_cluster.sh). The caller defines work (its
# directory), BIN (the steeple binary) and die.
#
#   build_signer
#       compiles sign_webhooks.c into $work/sign_webhooks
#   start_bench_cluster PG.SH-OPTIONS...
#       starts the private cluster (scripts/pg.sh with those options), exports
#       DATABASE_URL, the server's secrets, STEEPLE_SPOOL_DIR ($work/spool)
#       and TELNYX_PUBLIC_KEY (sign_webhooks' key; build_signer first), and
#       migrates the registry and the tenant template; with PGSS=1 the
#       cluster loads pg_stat_statements (pgss_lib.sh, sourced here)
#   db_url DATABASE
#       its URL on the bench cluster (unix socket or TCP)
#   sql DATABASE SQL
#       unaligned rows, no headers
#   post_webhooks OUT SECONDS THREADS FILE URL
#       wrk --latency, 64 connections, THREADS threads, POSTing the signed
#       webhooks of FILE (sign_webhooks' output) to URL with webhooks.lua;
#       its output into OUT
#   webhooks_stored OUT
#       "stored stored_per_s duplicates spooled wrapped" of that output:
#       stored are the answers 200 "stored" (200 less the duplicates)
#   field KEY OUT
#       the value after KEY in such an output

. spec/bench/pgss_lib.sh

build_signer() {
    # shellcheck disable=SC2046
    cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter -o "$work/sign_webhooks" \
        spec/bench/sign_webhooks.c $(pkg-config --cflags --libs libsodium)
}

start_bench_cluster() {
    bash scripts/pg.sh "$@" start
    if [ "${PGSS:-}" = 1 ]; then
        pgss_conf "${PGDIR:?}/data"
        bash scripts/pg.sh "$@" stop >/dev/null
        bash scripts/pg.sh "$@" start
    fi
    export DATABASE_URL
    DATABASE_URL=$(bash scripts/pg.sh "$@" url)
    export STEEPLE_TENANT_DATABASE_URLS=
    export STEEPLE_JWT_SECRET=steeple-bench-jwt-secret-of-at-least-32-bytes
    export STEEPLE_DATA_KEY=c3RlZXBsZS1iZW5jaC1kYXRhLWtleS0zMi1ieXRlcyE= # "steeple-bench-data-key-32-bytes!"
    export STEEPLE_AUTH_RATE_PER_MIN=0
    export STEEPLE_SPOOL_DIR=$work/spool
    export TELNYX_PUBLIC_KEY
    TELNYX_PUBLIC_KEY=$("$work/sign_webhooks" --public-key)
    "$BIN" migrate registry >/dev/null
    "$BIN" migrate tenants >/dev/null
    if [ "${PGSS:-}" = 1 ]; then sql steeple "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null; fi
}

db_url() {
    local base=${DATABASE_URL%%\?*} query=''
    [ "$base" = "$DATABASE_URL" ] || query="?${DATABASE_URL#*\?}"
    echo "${base%/*}/$1$query"
}

sql() {
    psql "$(db_url "$1")" -XAtq -v ON_ERROR_STOP=1 -c "$2"
}

post_webhooks() {
    BENCH_WEBHOOKS=$4 BENCH_THREADS=$3 wrk -t"$3" -c64 -d"$2s" --timeout 10s --latency \
        -s spec/bench/webhooks.lua "$5" > "$1" 2>&1 || die "wrk failed: $(cat "$1")"
}

field() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

webhooks_stored() {
    awk '$1 == "status" && $2 == 200 { ok = $3 } $1 == "duplicate" { dup = $2 } $1 == "spooled" { spo = $2 }
         $1 == "wrapped" { wr = $2 } $1 == "duration_us" { us = $2 }
         END { s = ok - dup; printf "%d %.1f %d %d %d\n", s, (us > 0 ? s / (us / 1e6) : 0), dup, spo, wr }' "$1"
}
