#!/usr/bin/env bash
# Past one node, in one run on a private cluster (var/bench-cluster-pg, on
# TCP as a remote server would be): signed `message.received` webhooks and
# reads (GET READ_PATH with the owners' tokens spread uniformly over the
# churches), wrk with 64 connections, against CHURCHES churches, each
# measured for DURATION seconds after WARM_S seconds of warm-up, in these
# variants (VARIANTS, every node WORKERS workers):
#   direct      one node on PostgreSQL, prepared statements on (the default
#               configuration: the baseline)
#   unprepared  the same with db.prepared_statements = false
#   pgbouncer   the same through PgBouncer 1.18 in transaction mode
#               (default_pool_size BOUNCER_POOL, prepared statements off)
#   haproxy1    one node (as direct) behind HAProxy 2.6
#   haproxy2    two nodes behind HAProxy (round robin, health checks on
#               /ready), each with half the connection budget
#               (db.server_max_connections BUDGET / 2, cluster.nodes 2)
# Every figure is taken in ROUNDS rounds; each round starts every variant
# afresh, the rounds in alternating order (forward, then backward), so the
# machine's drift falls on all alike; a figure is the mean of its rounds.
# Printed: each measurement (req/s, p99, non-2xx; for webhooks the answers
# "stored" and spooled; for two nodes the share of requests HAProxy sent to
# each), then per variant the mean req/s, worst p99 and all non-2xx, and the
# ratios: pgbouncer/direct, split into the pooler's own cost
# (pgbouncer/unprepared) times the prepared statements' (unprepared/direct);
# haproxy2/haproxy1 (two nodes against one; on a machine of few cores < 2)
# and haproxy1/direct (the balancer's cost).
#
# Churches: one registered, the others copied from its database (churches.sh),
# each given CONTACTS contacts with a conversation in SQL, so the webhooks
# (sign_webhooks.c, signed right before each run, every request a new
# payload.id) come from known contacts and every church has a full page of
# conversations. PgBouncer, HAProxy and the nodes listen on free ports below
# the ephemeral range; the cluster, every process and the work directory are
# removed on exit (KEEP=1 keeps the work directory, with the logs and wrk's
# output).
#
#   CHURCHES=20 DURATION=10 WARM_S=2 ROUNDS=2 WORKERS=2 BUDGET=80 BOUNCER_POOL=8 \
#   READ_PATH='/api/conversations?limit=50' VARIANTS='direct unprepared pgbouncer haproxy1 haproxy2' \
#   KEEP=1 bash spec/bench/bench_cluster.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CHURCHES=${CHURCHES:-20}
DURATION=${DURATION:-10}
WARM_S=${WARM_S:-2}
ROUNDS=${ROUNDS:-2}
WORKERS=${WORKERS:-2}
BUDGET=${BUDGET:-80}
BOUNCER_POOL=${BOUNCER_POOL:-8}
CONTACTS=${CONTACTS:-300}
SEED_JOBS=${SEED_JOBS:-4}
READ_PATH=${READ_PATH:-/api/conversations?limit=50}
VARIANTS=${VARIANTS:-direct unprepared pgbouncer haproxy1 haproxy2}
BIN=${BIN:-$PWD/build/steeple}
PGDIR=${PGDIR:-var/bench-cluster-pg}
PGBOUNCER=/usr/sbin/pgbouncer
HAPROXY=/usr/sbin/haproxy
HOOK=/api/webhooks/telnyx/messaging
HOOKS_PER_S=8000 # webhooks signed per second of a run: more than wrk sends
PASSWORD=bench-password-123
run=$(date +%s)-$$
mkdir -p var
work=$(mktemp -d "$PWD/var/bench-cluster.XXXXXX")
chmod 711 "$work" # PgBouncer, run as postgres by root, reaches its directory in it
touch "$work/haproxy.log"
nodes=() bouncer='' haproxy='' pid=''
stop_server() { # HAProxy, every node, then PgBouncer (which requests cut off by wrk's stop may still use)
    local group p
    for group in "$haproxy" "${nodes[*]}" "$bouncer"; do
        for p in $group; do kill "$p" 2>/dev/null || true; done
        for p in $group; do wait "$p" 2>/dev/null || true; done
    done
    nodes=() bouncer='' haproxy='' pid=''
}
cleanup() {
    stop_server
    bash scripts/pg.sh --dir "$PGDIR" destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
server_log() { [ -f "$work/log" ] && { echo "--- last lines of the nodes' log ($work/log):" >&2; tail -20 "$work/log" >&2; }; return 0; }
die() { echo "bench_cluster: $*" >&2; server_log; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
[ -x "$PGBOUNCER" ] || die "$PGBOUNCER is missing (vendor/packages.txt: pgbouncer)"
[ -x "$HAPROXY" ] || die "$HAPROXY is missing (vendor/packages.txt: haproxy)"
read -r -a variants <<< "$VARIANTS"

# A port nobody listens on or connects from, below the kernel's ephemeral
# range (which outgoing connections take from), and not handed out before.
taken=' '
free_port() {
    local low=32768 p
    [ -r /proc/sys/net/ipv4/ip_local_port_range ] && read -r low _ < /proc/sys/net/ipv4/ip_local_port_range
    [ "$low" -gt 21024 ] || low=32768
    while :; do
        p=$((20000 + RANDOM % (low - 21000)))
        [[ $taken == *" $p "* ]] && continue
        ss -Htan "( sport = :$p or dport = :$p )" | grep -q . && continue
        taken="$taken$p "
        echo "$p"
        return
    done
}

. spec/bench/messaging_lib.sh
. spec/bench/churches.sh
. spec/bench/wrk_summary.sh
build_signer
start_bench_cluster --dir "$PGDIR" --tcp
direct_url=$DATABASE_URL
pg_port=${direct_url##*:} pg_port=${pg_port%%/*}

# --- nodes, PgBouncer, HAProxy ----------------------------------------------------
node_ports=("$(free_port)" "$(free_port)")
bouncer_port=$(free_port) haproxy_port=$(free_port) stats_port=$(free_port)
base=http://127.0.0.1:${node_ports[0]}
node_config() { # node prepared budget nodes → the config file's path
    local f=$work/config$1-$2-$3.lua
    cat > "$f" <<CFG
return { port = ${node_ports[$1]}, workers = $WORKERS, log = { level = "warn" }, auth = { access_ttl_s = 86400 },
         db = { prepared_statements = $2, server_max_connections = $3 }, cluster = { nodes = $4 } }
CFG
    echo "$f"
}
start_node() { # node config database-url
    mkdir -p "$work/node$1"
    DATABASE_URL=$3 STEEPLE_SPOOL_DIR=$work/node$1/spool \
        "$BIN" serve --config "$2" --scripts "$work/lua" 2>>"$work/log" &
    nodes+=("$!")
    [ -n "$pid" ] || pid=$!
    local url=http://127.0.0.1:${node_ports[$1]} _i
    for _i in $(seq 100); do
        curl -sf "$url/ready" >/dev/null && return 0
        kill -0 "${nodes[-1]}" 2>/dev/null || die "node $1 exited at start-up"
        sleep 0.1
    done
    die "node $1 is not ready"
}
start_server() { start_node 0 "$(node_config 0 true "$BUDGET" 1)" "$direct_url"; } # for churches.sh

start_bouncer() {
    local d=$work/pgbouncer as='' _i
    mkdir -p "$d"
    printf '"steeple" ""\n' > "$d/userlist.txt"
    cat > "$d/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $d/userlist.txt
pool_mode = transaction
max_client_conn = 400
default_pool_size = $BOUNCER_POOL
ignore_startup_parameters = extra_float_digits,options
logfile = $d/pgbouncer.log
log_connections = 0
log_disconnections = 0
INI
    if [ "$(id -u)" = 0 ]; then as='-u postgres'; chown -R postgres "$d"; fi # it refuses to run as root
    # shellcheck disable=SC2086
    "$PGBOUNCER" -q $as "$d/pgbouncer.ini" &
    bouncer=$!
    for _i in $(seq 100); do
        psql "postgresql://steeple@127.0.0.1:$bouncer_port/steeple" -XAtqc 'SELECT 1' >/dev/null 2>&1 && return 0
        kill -0 "$bouncer" 2>/dev/null || die "pgbouncer exited at start-up: $(tail -5 "$d/pgbouncer.log")"
        sleep 0.1
    done
    die "pgbouncer does not answer: $(tail -5 "$d/pgbouncer.log")"
}

haproxy_stats() { # → "node stot status" per node
    curl -sf "http://127.0.0.1:$stats_port/stats;csv" | awk -F, '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "nodes" && $2 ~ /^node/ { st = $col["status"]; gsub(/ /, "_", st); print $2, $col["stot"], st }'
}
start_haproxy() { # nodes
    local i _i up
    {
        cat <<CFG
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend steeple
    bind 127.0.0.1:$haproxy_port
    default_backend nodes
frontend stats
    bind 127.0.0.1:$stats_port
    stats enable
    stats uri /stats
backend nodes
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
CFG
        for i in $(seq 0 $(($1 - 1))); do
            echo "    server node$i 127.0.0.1:${node_ports[$i]} check inter 1s fall 2 rise 1"
        done
    } > "$work/haproxy.cfg"
    "$HAPROXY" -q -c -f "$work/haproxy.cfg" || die "haproxy refuses its configuration"
    "$HAPROXY" -db -f "$work/haproxy.cfg" 2>>"$work/haproxy.log" &
    haproxy=$!
    for _i in $(seq 100); do
        up=$({ haproxy_stats 2>/dev/null || true; } | awk '$3 == "UP"' | wc -l)
        [ "$up" = "$1" ] && return 0
        kill -0 "$haproxy" 2>/dev/null || die "haproxy exited at start-up: $(tail -5 "$work/haproxy.log")"
        sleep 0.1
    done
    die "haproxy does not see $1 node(s) up: $(haproxy_stats)"
}

start_variant() { # variant → sets url (where the load goes) and node_urls
    local half=$((BUDGET / 2))
    case $1 in
        direct) start_server ;;
        unprepared) start_node 0 "$(node_config 0 false "$BUDGET" 1)" "$direct_url" ;;
        pgbouncer)
            start_bouncer
            start_node 0 "$(node_config 0 false "$BUDGET" 1)" "postgresql://steeple@127.0.0.1:$bouncer_port/steeple" ;;
        haproxy1) start_server; start_haproxy 1 ;;
        haproxy2)
            start_node 0 "$(node_config 0 true "$half" 2)" "$direct_url"
            start_node 1 "$(node_config 1 true "$half" 2)" "$direct_url"
            start_haproxy 2 ;;
        *) die "unknown variant: $1" ;;
    esac
    node_urls=("http://127.0.0.1:${node_ports[0]}")
    [ "$1" != haproxy2 ] || node_urls+=("http://127.0.0.1:${node_ports[1]}")
    url=$base
    case $1 in haproxy*) url=http://127.0.0.1:$haproxy_port ;; esac
}

# --- churches -----------------------------------------------------------------------
bench_scripts
start_server
seed_churches "$CHURCHES" "$SEED_JOBS" +15550000001
number_churches
t0=$(date +%s.%N)
mapfile -t tenant_dbs < <(sql steeple "SELECT db_name FROM tenants
    WHERE starts_with(church_name, 'Bench Church ') ORDER BY church_name")
for i in $(seq "$CHURCHES"); do # church i's contacts: sign_webhooks.c's senders to it, +1666, i - 1 and k
    sql "${tenant_dbs[$((i - 1))]}" "WITH c AS (INSERT INTO contacts (phone_number)
            SELECT '+1666' || lpad('$((i - 1))', 3, '0') || lpad(k::text, 5, '0')
            FROM generate_series(0, $CONTACTS) k RETURNING id)
        INSERT INTO conversations (contact_id, last_message_at, last_message_preview)
        SELECT id, now() - random() * interval '1 hour', 'seeded' FROM c" >/dev/null
done
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v n="$((CONTACTS + 1))" 'BEGIN { printf "gave each church %d contacts and conversations in %.1f s\n", n, b - a }'
start_server
mint_tokens "$work/tokens" "$CHURCHES"
stop_server

# --- measurements -------------------------------------------------------------------
spool_pending() { # over the running nodes
    local u
    for u in "${node_urls[@]}"; do curl -sf "$u/metrics"; done |
        awk '/^steeple_spool_pending/ { n += $2 } END { print n + 0 }'
}
settle() { # waits (up to 60 s) until every spooled webhook is applied
    local _i
    for _i in $(seq 120); do
        [ "$(spool_pending)" = 0 ] && return 0
        sleep 0.5
    done
    echo "WARNING: after 60 s, $(spool_pending) webhooks still spooled" >&2
}
hooks() { # out seconds tag
    "$work/sign_webhooks" "$work/hooks" $(($2 * HOOKS_PER_S)) "$CHURCHES" "$CONTACTS" 16 "$run-$3" ||
        die "sign_webhooks failed"
    post_webhooks "$1" "$2" 2 "$work/hooks" "$url$HOOK"
}
reads() { # out seconds
    BENCH_TOKENS=$work/tokens BENCH_ZIPF=0 wrk -t2 -c64 -d"$2s" --timeout 10s --latency -s spec/bench/tokens.lua \
        "$url$READ_PATH" > "$1" 2>&1 || die "wrk failed: $(cat "$1")"
}
shares() { # stats before, after → "node0 N% node1 M%"
    join <(sort "$1") <(sort "$2") | awk '{ d[$1] = $4 - $2; t += $4 - $2 }
        END { for (n in d) { printf "%s%s %.0f%%", sep, n, t ? 100 * d[n] / t : 0; sep = ", " } }'
}
declare -A sum_rps worst_p99 bad_n all_n stored_n spooled_n
for v in "${variants[@]}"; do
    for k in hooks reads; do sum_rps[$k$v]=0 worst_p99[$k$v]=0 bad_n[$k$v]=0 all_n[$k$v]=0; done
    stored_n[$v]=0 spooled_n[$v]=0
done
label() { if [ "$1" = hooks ]; then echo webhooks; else echo reads; fi; }
note() { # kind variant out → the measurement's line; adds it to the sums
    local rps p99 all bad detail stored rate dup spooled wrapped line
    read -r rps p99 all bad detail < <(wrk_summary "$3")
    sum_rps[$1$2]=$(awk -v a="${sum_rps[$1$2]}" -v b="$rps" 'BEGIN { print a + b }')
    worst_p99[$1$2]=$(awk -v a="${worst_p99[$1$2]}" -v b="$p99" 'BEGIN { print ((b > a) ? b : a) }')
    bad_n[$1$2]=$((bad_n[$1$2] + bad)) all_n[$1$2]=$((all_n[$1$2] + all))
    line=$(printf '%-8s %-11s %9s req/s  p99 %8s ms  non-2xx %d of %d' "$(label "$1")" "$2" "$rps" "$p99" "$bad" "$all")
    if [ "$1" = hooks ]; then
        read -r stored rate dup spooled wrapped < <(webhooks_stored "$3")
        stored_n[$2]=$((stored_n[$2] + stored)) spooled_n[$2]=$((spooled_n[$2] + spooled))
        line="$line; $stored stored ($rate/s), $spooled spooled"
        [ "$dup" = 0 ] || line="$line, $dup duplicates (wrk went round the signed webhooks $wrapped times)"
    fi
    echo "$line${detail:+ ($detail )}"
}
echo "wrk: 64 connections, 2 threads, ${WARM_S} s warm-up then ${DURATION} s measured, $ROUNDS round(s);" \
     "$CHURCHES churches; $WORKERS workers a node; webhooks: POST $HOOK (signed message.received," \
     "each a new message from one of the church's $((CONTACTS + 1)) contacts); reads: GET $READ_PATH"
echo "connection budget (db.server_max_connections): $BUDGET for one node, $((BUDGET / 2)) each for two;" \
     "PgBouncer: transaction mode, default_pool_size $BOUNCER_POOL"
log_mark=0
for round in $(seq "$ROUNDS"); do
    order=("${variants[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#variants[@]} - 1; i >= 0; i--)); do order+=("${variants[$i]}"); done
    fi
    echo "round $round: ${order[*]}"
    for v in "${order[@]}"; do
        start_variant "$v"
        [ -z "$haproxy" ] || haproxy_stats > "$work/stats0"
        reads "$work/warm" "$WARM_S"
        hooks "$work/warm" "$WARM_S" "warm-$v-$round"
        settle
        hooks "$work/hooks_${v}_$round" "$DURATION" "$v-$round"
        note hooks "$v" "$work/hooks_${v}_$round"
        settle
        reads "$work/reads_${v}_$round" "$DURATION"
        note reads "$v" "$work/reads_${v}_$round"
        if [ -n "$haproxy" ] && [ "$v" = haproxy2 ]; then
            haproxy_stats > "$work/stats1"
            echo "       haproxy2: requests per node $(shares "$work/stats0" "$work/stats1")"
        fi
        stop_server
        lines=$(wc -l < "$work/log")
        errs=$(tail -n +"$((log_mark + 1))" "$work/log" | grep -c '"level":"error"' || true)
        warns=$(tail -n +"$((log_mark + 1))" "$work/log" | grep -c '"level":"warn"' || true)
        [ "$errs$warns" = 00 ] || echo "       $v: $errs error and $warns warn lines in the nodes' log"
        log_mark=$lines
    done
done

# --- summary --------------------------------------------------------------------------
mean() { awk -v a="${sum_rps[$1]}" -v n="$ROUNDS" 'BEGIN { printf "%.1f", a / n }'; }
errors=$(grep -c '"level":"error"' "$work/log" || true)
warns=$(grep -c '"level":"warn"' "$work/log" || true)
echo "nodes' log: $errors error lines, $warns warn lines; HAProxy's health checks took a node down" \
     "$(grep -c ' is DOWN' "$work/haproxy.log" || true) times"
if [ "$errors" != 0 ] || [ "$warns" != 0 ]; then # their messages, most frequent first
    grep -E '"level":"(warn|error)"' "$work/log" | sed -E 's/.*"level":"([a-z]+)".*"msg":"(([^"\\]|\\.)*)".*/\1: \2/' |
        sort | uniq -c | sort -rn | head -5
fi
echo "--- summary (mean req/s over $ROUNDS round(s), worst p99, all non-2xx) ---"
for k in hooks reads; do
    for v in "${variants[@]}"; do
        line=$(printf '%-8s %-11s %9s req/s  p99 %8s ms  non-2xx %d of %d' "$(label "$k")" "$v" "$(mean "$k$v")" \
            "${worst_p99[$k$v]}" "${bad_n[$k$v]}" "${all_n[$k$v]}")
        [ "$k" != hooks ] || line="$line; ${stored_n[$v]} stored, ${spooled_n[$v]} spooled"
        echo "$line"
    done
done
has() { [[ " ${variants[*]} " == *" $1 "* ]]; }
for k in hooks reads; do
    name=webhooks
    [ "$k" = hooks ] || name="reads ($READ_PATH)"
    if has direct && has unprepared && has pgbouncer; then
        echo "$name: pgbouncer/direct $(ratio "${sum_rps[${k}pgbouncer]}" "${sum_rps[${k}direct]}")" \
             "= pooler (pgbouncer/unprepared) $(ratio "${sum_rps[${k}pgbouncer]}" "${sum_rps[${k}unprepared]}")" \
             "x prepared statements off (unprepared/direct) $(ratio "${sum_rps[${k}unprepared]}" "${sum_rps[${k}direct]}")"
    fi
    if has direct && has haproxy1 && has haproxy2; then
        echo "$name: two nodes/one behind HAProxy $(ratio "${sum_rps[${k}haproxy2]}" "${sum_rps[${k}haproxy1]}")" \
             "($(nproc) cores); haproxy1/direct $(ratio "${sum_rps[${k}haproxy1]}" "${sum_rps[${k}direct]}");" \
             "two nodes behind HAProxy/one direct $(ratio "${sum_rps[${k}haproxy2]}" "${sum_rps[${k}direct]}")"
    fi
done
