#!/usr/bin/env bash
# make run: serve with a private PostgreSQL in var/pg unless DATABASE_URL is set,
# after bringing the registry, the template and every tenant database up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DATABASE_URL:-}" ]; then
    bash scripts/pg.sh start
    DATABASE_URL=$(bash scripts/pg.sh url)
    export DATABASE_URL
    echo "steeple: private PostgreSQL in var/pg ($DATABASE_URL)" >&2
fi
build/steeple migrate registry --config config.lua
build/steeple migrate tenants --config config.lua
exec build/steeple serve --config config.lua "$@"
