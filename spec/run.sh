#!/usr/bin/env bash
# Runs the spec suites and ends with one line "N passed, N failed".
#
#   spec/run.sh [c] [unit] [integration] [faults]   (default: the first three)
#
# Every suite speaks TAP; this script counts "ok" and "not ok" lines. The
# integration suite gets a throw-away PostgreSQL cluster in var/test-pg-tcp,
# reached over TCP on 127.0.0.1, which is stopped again when this script ends
# (a cluster that was already running is left running). SPECS="spec/integration/13-auth_spec.lua ..."
# runs only those files of the integration (or fault) suite.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
C_TESTS=${C_TESTS:-}
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(c unit integration)

log=$(mktemp)
TEST_PG=(bash scripts/pg.sh --dir var/test-pg-tcp --tcp)
pg_started=0
finish() {
    rm -f "$log"
    if (( pg_started )); then "${TEST_PG[@]}" stop || echo "cannot stop the PostgreSQL in var/test-pg-tcp"; fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
status=0

run_suite() { # name, command...
    local name=$1
    shift
    echo "== $name"
    "$@" 2>&1 | tee -a "$log" | grep -vE '^ok ' || true
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "== $name exited with status $rc"
        status=1
    fi
}

# the 5,000-connection specs need more open files than the usual default
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

busted() {
    lua5.4 /usr/bin/busted -o TAP "$@"
}

for suite in "${suites[@]}"; do
    case $suite in
    c)
        run_suite "c: module graph of core/" bash scripts/check_includes.sh core "$BUILD/obj"
        for t in $C_TESTS; do
            run_suite "c: $t" "$BUILD/$t"
        done
        ;;
    unit)
        run_suite "lua unit specs" busted spec/unit
        ;;
    integration)
        # over TCP on 127.0.0.1: the specs need no socket file in the tree
        # stopped at the end only when this run started it
        if ! "${TEST_PG[@]}" status >/dev/null 2>&1; then pg_started=1; fi
        "${TEST_PG[@]}" start || { echo "cannot start PostgreSQL"; exit 1; }
        DATABASE_URL=$("${TEST_PG[@]}" url)
        export DATABASE_URL
        # every server's log and every secret the specs send, for spec 99
        STEEPLE_SPEC_LOGS=$PWD/var/spec-logs
        rm -rf "$STEEPLE_SPEC_LOGS" && mkdir -p "$STEEPLE_SPEC_LOGS"
        export STEEPLE_SPEC_LOGS
        STEEPLE_BIN="$PWD/${STEEPLE_BIN_WRAPPER:-$BUILD/steeple}" run_suite "integration specs" \
            busted --lpath='spec/?.lua' ${SPECS:-spec/integration}
        ;;
    faults)
        # the fault suite starts, stops and removes its own clusters (var/faults)
        rm -f var/faults/results.md
        STEEPLE_BIN="$PWD/$BUILD/steeple" run_suite "fault suite" \
            busted --lpath='spec/?.lua' ${SPECS:-spec/faults}
        [ -f var/faults/results.md ] && cat var/faults/results.md
        ;;
    *)
        echo "unknown suite: $suite"
        exit 2
        ;;
    esac
done

passed=$(grep -cE '^ok ' "$log")
failed=$(grep -cE '^not ok ' "$log")
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
