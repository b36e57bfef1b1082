#!/usr/bin/env bash
# make run: serve with a private PostgreSQL in var/pg unless DATABASE_URL is set,
# after bringing the registry, the template and every tenant database up to date.
# A cluster this script started is stopped when the server exits (Ctrl-C,
# SIGTERM) or when a step before it fails; one that was already running is
# left running.
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
stop_cluster() {
    if (( started )); then
        echo "steeple: stopping the private PostgreSQL in var/pg" >&2
        bash scripts/pg.sh stop || true
    fi
}
trap stop_cluster EXIT

if [ -z "${DATABASE_URL:-}" ]; then
    bash scripts/pg.sh status >/dev/null 2>&1 || started=1
    bash scripts/pg.sh start
    DATABASE_URL=$(bash scripts/pg.sh url)
    export DATABASE_URL
    echo "steeple: private PostgreSQL in var/pg ($DATABASE_URL)" >&2
fi
build/steeple migrate registry --config config.lua
build/steeple migrate tenants --config config.lua

if (( ! started )); then
    trap - EXIT
    exec build/steeple serve --config config.lua "$@"
fi

# The server runs as a child so that the cluster can be stopped after it.
# A background child of a script ignores SIGINT: both signals reach it as
# SIGTERM, which stops it the same way (in-flight requests finish).
build/steeple serve --config config.lua "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true' INT TERM
status=0
while :; do
    wait "$server" && status=0 || status=$?
    kill -0 "$server" 2>/dev/null || break # else a signal ended the wait, not the server
done
exit "$status"
