#!/usr/bin/env bash
# make bench: runs every benchmark in spec/bench and prints their reports.
set -euo pipefail
cd "$(dirname "$0")"
for b in bench_*.sh; do
    echo "== $b"
    bash "$b"
done
