#!/usr/bin/env bash
# Soak: is the RSS of the server stable over DURATION seconds (default 300)
# of mixed load? On a private cluster (var/bench-pg, port 5439), a server of
# 2 workers (log.level warn, STEEPLE_AUTH_RATE_PER_MIN=0, fixed bench keys,
# default argon2id settings) gets CHURCHES (10) registrations, then webhooks
# for SEED_S seconds to seed their conversations, then, all at once for
# DURATION seconds:
#  - logins (wrk, 4 connections): POST /api/auth/login with the right
#    password, going round the churches' admins;
#  - reads (wrk, 8 connections): GET /api/conversations?limit=50 and
#    GET /api/conversations/{id}/messages?limit=50 (each church's longest
#    conversation), going round the churches with their bearer tokens;
#  - signed `message.received` webhooks (wrk, 16 connections), each request
#    a distinct payload.id (a real insert), spread over CONTACTS contacts per
#    church (its conversations keep growing).
# The webhooks are pre-signed by sign_webhooks.c in one file of WEBHOOK_N
# requests (default DURATION x WEBHOOK_RATE) right before the load, all with
# that moment's timestamp, which is why the server runs with
# telnyx.tolerance_s = 3600 (the maximum; so DURATION is at most 3300 s).
# wrk reads the file line by line; if it goes round it, the duplicates are
# reported (raise WEBHOOK_RATE).
# Every SAMPLE_S seconds the VmRSS of the master and of each worker (its
# children) is printed; the workers are also polled every 0.25 s, and each
# line shows their [min..max] since the previous sample (a worker's RSS swings
# by up to threads x argon2_memory_kib with the hashes running at the instant).
# Each sample line also shows steeple_lua_heap_bytes from /metrics (the Lua
# heaps of both workers) in KiB.
# At the end: requests and non-2xx per load kind, each process's RSS after
# warm-up (the sample at WARMUP_S, or the 2nd sample if DURATION <= WARMUP_S)
# vs the last sample under load (growth in KiB, ratio, KiB/min fitted over the
# samples from warm-up on), for the workers also on the window minima, the
# max RSS, VmHWM, and the error/warn lines of the server log. The work
# directory (var/bench-soak.*, on the repo's disk: spool and signed requests)
# is removed unless KEEP=1.
#
#   DURATION=300 SAMPLE_S=10 WARMUP_S=60 CHURCHES=10 SEED_S=5 CONTACTS=5000 \
#   WEBHOOK_RATE=3000 WEBHOOK_N= KEEP=1 bash spec/bench/bench_soak.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-300}
SAMPLE_S=${SAMPLE_S:-10}
WARMUP_S=${WARMUP_S:-60}
CHURCHES=${CHURCHES:-10}
SEED_S=${SEED_S:-5}
CONTACTS=${CONTACTS:-5000}
WEBHOOK_RATE=${WEBHOOK_RATE:-3000}
WEBHOOK_N=${WEBHOOK_N:-$((DURATION * WEBHOOK_RATE))}
WORKERS=2
SEED_CONTACTS=100 # the seed's contacts per church: >= 50 conversations each
HOT_EVERY=4       # seed: every 4th webhook of a church from its contact 0 (the read conversation)
BIN=$PWD/build/steeple
PGDIR=var/bench-pg
PASSWORD=bench-password-123
[ "$DURATION" -ge 2 ] && [ "$DURATION" -le 3300 ] || { echo "bench_soak: DURATION must be 2..3300" >&2; exit 2; }
[ "$SAMPLE_S" -ge 1 ] || { echo "bench_soak: SAMPLE_S must be >= 1" >&2; exit 2; }
[ "$CHURCHES" -le 999 ] || { echo "bench_soak: at most 999 churches" >&2; exit 2; }
run=$(date +%s)-$$
mkdir -p var
work=$(mktemp -d "$PWD/var/bench-soak.XXXXXX") # on the repo's disk, not a tmpfs
pid='' loads=()
stop_server() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
cleanup() {
    local p left
    for p in "${loads[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    stop_server
    bash scripts/pg.sh --dir "$PGDIR" --port 5439 destroy >/dev/null 2>&1 || true
    left=$( { pgrep -af -- "$work/config.lua" || true; pgrep -af -- "$PWD/$PGDIR/data" || true; } )
    if [ -n "$left" ]; then
        echo "cleanup: WARNING: processes left:" >&2
        echo "$left" >&2
    else
        echo "cleanup: no server or cluster process left (pgrep)"
    fi
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
server_log() { [ -f "$work/log" ] && { echo "--- last lines of the server log ($work/log):" >&2; tail -20 "$work/log" >&2; }; return 0; }
die() { echo "bench_soak: $*" >&2; server_log; exit 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

. spec/bench/messaging_lib.sh
build_signer

# --- cluster and server --------------------------------------------------------
start_bench_cluster --dir "$PGDIR" --port 5439

port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
access_ttl=$((DURATION + 900))
cat > "$work/config.lua" <<CFG
return { port = $port, workers = $WORKERS, log = { level = "warn" },
         auth = { access_ttl_s = $access_ttl },
         telnyx = { tolerance_s = 3600 },
         tenants = { max_provisioning = $CHURCHES },
         db = { server_max_connections = 200 } }
CFG
"$BIN" serve --config "$work/config.lua" 2>>"$work/log" &
pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -sf "$base/health" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || die "the server exited at start-up"
    sleep 0.1
done
curl -sf "$base/health" >/dev/null || die "the server did not start"
workers() { pgrep -P "$pid" | sort -n | tr '\n' ' ' | sed 's/ $//'; }
for _ in $(seq 50); do [ "$(workers | wc -w)" = "$WORKERS" ] && break; sleep 0.1; done
read -r -a wpids <<< "$(workers)"
[ "${#wpids[@]}" = "$WORKERS" ] || die "expected $WORKERS workers under master $pid, found: $(workers)"

# --- churches, tokens, seeded conversations -------------------------------------
# Church i (1-based) has the number +1555 and i in 7 digits, admin church<i>-<run>@bench.example.
regs=()
for i in $(seq "$CHURCHES"); do
    curl -s -o "$work/reg_body$i" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data \
        "$(printf '{"churchName":"Soak Church %d","email":"church%d-%s@bench.example","password":"%s","adminName":"Soak Admin","phoneNumber":"+1555%07d"}' \
            "$i" "$i" "$run" "$PASSWORD" "$i")" \
        "$base/api/auth/register" > "$work/reg_status$i" &
    regs+=($!)
done
for p in "${regs[@]}"; do wait "$p" || true; done
tokens=()
for i in $(seq "$CHURCHES"); do
    [ "$(cat "$work/reg_status$i")" = 201 ] ||
        die "registering church $i answered $(cat "$work/reg_status$i"): $(cat "$work/reg_body$i")"
    tokens+=("$(sed 's/.*"accessToken":"\([^"]*\)".*/\1/' "$work/reg_body$i")")
done
mapfile -t tenant_dbs < <(sql steeple "SELECT db_name FROM tenants WHERE phone_number LIKE '+1555%' ORDER BY phone_number")
[ "${#tenant_dbs[@]}" = "$CHURCHES" ] || die "expected $CHURCHES tenant databases, found ${#tenant_dbs[@]}"
stored_rows() { # messages over every church's database
    local total=0 db
    for db in "${tenant_dbs[@]}"; do total=$((total + $(sql "$db" "SELECT count(*) FROM messages"))); done
    echo "$total"
}

# wrk scripts (the counting part first, as the handlers call count). Each counts statuses; done() prints "status CODE COUNT" per
# status, "timeouts N" and the script's own counters.
counting_tail='
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
local function count(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary)
    local total, extra = {}, {}
    for _, t in ipairs(threads) do
        for code, c in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + c end
        for _, k in ipairs(EXTRA or {}) do extra[k] = (extra[k] or 0) + t:get(k) end
    end
    for code, c in pairs(total) do print("status " .. code .. " " .. c) end
    for _, k in ipairs(EXTRA or {}) do print(k .. " " .. extra[k]) end
    print("timeouts " .. summary.errors.timeout)
end'

# Webhooks: read the signed file line by line (lines "ts<TAB>sig<TAB>body"),
# going round it again at its end (then the requests are duplicates).
cat > "$work/webhooks.lua" <<LUA
$counting_tail
local file = os.getenv("BENCH_WEBHOOKS")
local fh
EXTRA = { "stored", "duplicate", "spooled", "wrapped" }
function init()
    statuses, stored, duplicate, spooled, wrapped = {}, 0, 0, 0, 0
    fh = assert(io.open(file))
end
function request()
    local line = fh:read("*l")
    if line == nil then
        fh:close(); fh = assert(io.open(file)); wrapped = wrapped + 1
        line = fh:read("*l")
    end
    local ts, sig, body = line:match("^(%d+)\t(%S+)\t(.*)$")
    return wrk.format("POST", "/api/webhooks/telnyx/messaging", {
        ["Content-Type"] = "application/json", ["telnyx-timestamp"] = ts,
        ["telnyx-signature-ed25519"] = sig }, body)
end
function response(status, headers, body)
    count(status)
    if body:find('"stored"', 1, true) then stored = stored + 1
    elseif body:find('"duplicate"', 1, true) then duplicate = duplicate + 1
    elseif body:find('"spooled"', 1, true) then spooled = spooled + 1 end
end
$counting_tail
LUA

# Seed: SEED_S seconds of webhooks over SEED_CONTACTS contacts per church.
seed_n=$((SEED_S * 2000 + CHURCHES * 200))
"$work/sign_webhooks" "$work/seed" "$seed_n" "$CHURCHES" "$SEED_CONTACTS" "$HOT_EVERY" "$run-seed" ||
    die "sign_webhooks (seed) failed"
BENCH_WEBHOOKS=$work/seed wrk -t1 -c16 -d"${SEED_S}s" --timeout 10s -s "$work/webhooks.lua" \
    "$base/api/webhooks/telnyx/messaging" > "$work/wrk_seed" 2>&1 || die "wrk (seed) failed: $(cat "$work/wrk_seed")"
sleep 1
# Each church's longest conversation (its contact 0) is the one read.
read_lines=()
min_conv='' min_msgs=''
for i in $(seq "$CHURCHES"); do
    db=${tenant_dbs[$((i - 1))]}
    nconv=$(sql "$db" "SELECT count(*) FROM conversations")
    hot=$(sql "$db" "SELECT conversation_id, count(*) FROM messages GROUP BY conversation_id ORDER BY count(*) DESC LIMIT 1")
    [ -n "$hot" ] || die "church $i has no messages after the seed (wrk: $(grep -E 'requests in|Non-2xx' "$work/wrk_seed" | tr '\n' ' '))"
    hot_id=${hot%|*} hot_n=${hot#*|}
    { [ "$nconv" -ge 50 ] && [ "$hot_n" -ge 50 ]; } ||
        die "church $i has $nconv conversations, the longest $hot_n messages after the seed: raise SEED_S"
    if [ -z "$min_conv" ] || [ "$nconv" -lt "$min_conv" ]; then min_conv=$nconv; fi
    if [ -z "$min_msgs" ] || [ "$hot_n" -lt "$min_msgs" ]; then min_msgs=$hot_n; fi
    tok=${tokens[$((i - 1))]}
    read_lines+=("{ \"$tok\", \"/api/conversations?limit=50\" }," "{ \"$tok\", \"/api/conversations/$hot_id/messages?limit=50\" },")
done
curl -sf -H "Authorization: Bearer ${tokens[0]}" "$base/api/conversations?limit=50" > "$work/page" ||
    die "GET /api/conversations failed"
[ "$(grep -o '"contactPhone"' "$work/page" | wc -l)" = 50 ] || die "the conversation page has not 50 rows: $(head -c 300 "$work/page")"
seeded=$(stored_rows)
echo "setup: $CHURCHES churches; seeded $seeded messages by webhooks (${SEED_S} s); each church >= $min_conv conversations," \
     "its longest >= $min_msgs messages"

# Reads: going round the (token, path) pairs of every church.
cat > "$work/reads.lua" <<LUA
$counting_tail
local reqs = {
$(printf '    %s\n' "${read_lines[@]}")
}
local i = 0
function init() statuses = {} end
function request()
    i = i % #reqs + 1
    return wrk.format("GET", reqs[i][2], { ["Authorization"] = "Bearer " .. reqs[i][1] })
end
function response(status) count(status) end
LUA

# Logins: right password, going round the churches' admins.
cat > "$work/logins.lua" <<LUA
$counting_tail
local emails = {}
for i = 1, $CHURCHES do emails[i] = "church" .. i .. "-$run@bench.example" end
local i = 0
function init() statuses = {} end
function request()
    i = i % #emails + 1
    return wrk.format("POST", "/api/auth/login", { ["Content-Type"] = "application/json" },
        '{"email":"' .. emails[i] .. '","password":"$PASSWORD"}')
end
function response(status) count(status) end
LUA

# --- the load ---------------------------------------------------------------------
t_sign=$(date +%s.%N)
"$work/sign_webhooks" "$work/webhooks" "$WEBHOOK_N" "$CHURCHES" "$CONTACTS" 16 "$run" || die "sign_webhooks failed"
echo "signed $WEBHOOK_N webhooks in $(awk -v a="$t_sign" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" \
     "($(( $(stat -c %s "$work/webhooks") / 1048576 )) MiB); server telnyx.tolerance_s = 3600"
before=$(stored_rows)

hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo -; }
now_ns() { date +%s%N; }

echo "load: ${DURATION} s; logins wrk 4 connections, reads wrk 8, webhooks wrk 16; $WORKERS workers;" \
     "RSS every ${SAMPLE_S} s"
t0=$(now_ns)
wrk -t1 -c4 -d"${DURATION}s" --timeout 10s -s "$work/logins.lua" "$base/api/auth/login" > "$work/wrk_logins" 2>&1 &
loads+=($!)
wrk -t1 -c8 -d"${DURATION}s" --timeout 10s -s "$work/reads.lua" "$base/api/conversations" > "$work/wrk_reads" 2>&1 &
loads+=($!)
BENCH_WEBHOOKS=$work/webhooks wrk -t1 -c16 -d"${DURATION}s" --timeout 10s -s "$work/webhooks.lua" \
    "$base/api/webhooks/telnyx/messaging" > "$work/wrk_webhooks" 2>&1 &
loads+=($!)

# Samples: the VmRSS of each process at each sample point (0, SAMPLE_S, ...;
# the one at DURATION is taken 1 s before it, while the load still runs).
# A worker's RSS swings by up to threads x auth.argon2_memory_kib with the
# password hashes running at that instant, so between sample points the
# workers are also polled every 0.25 s and each line shows their window's
# [min..max]; the min (the floor, no hash buffers) is the steadier trend.
# $work/rss: "nominal_s elapsed_s master w1 w1min w1max w2 w2min w2max ...".
rss_now() { # pid → VmRSS KiB, or - if gone (no fork: polled often)
    local k v _
    if [ -r "/proc/$1/status" ]; then
        while read -r k v _; do [ "$k" = VmRSS: ] && { echo "$v"; return; }; done 2>/dev/null < "/proc/$1/status"
    fi
    echo -
}
printf 'elapsed_s\tmaster(%s)' "$pid"
for w in "${wpids[@]}"; do printf '\tw(%s) [window min..max]' "$w"; done
printf '\n'
: > "$work/rss"
: > "$work/heap"
master=$pid restarts=0 nominal=0
declare -A wmin wmax
while :; do
    at=$nominal
    [ "$at" -ge "$DURATION" ] && at=$((DURATION - 1))
    target=$((t0 + at * 1000000000))
    while :; do # poll the workers until the sample point
        for w in "${wpids[@]}"; do
            r=$(rss_now "$w")
            [ "$r" = - ] && continue
            if [ -z "${wmin[$w]:-}" ] || [ "$r" -lt "${wmin[$w]}" ]; then wmin[$w]=$r; fi
            if [ -z "${wmax[$w]:-}" ] || [ "$r" -gt "${wmax[$w]}" ]; then wmax[$w]=$r; fi
        done
        d=$((target - $(now_ns)))
        [ "$d" -le 0 ] && break
        [ "$d" -gt 250000000 ] && d=250000000
        sleep "0.$(printf '%03d' $((d / 1000000)))"
    done
    read -r -a cur <<< "$(workers)"
    if [ "${cur[*]}" != "${wpids[*]}" ]; then
        echo "note: the workers changed from ${wpids[*]} to ${cur[*]} (a worker died and was restarted?)"
        restarts=$((restarts + 1))
        wpids=("${cur[@]}")
    fi
    el=$(( ($(now_ns) - t0) / 1000000000 ))
    heap=$(curl -s -m 2 "$base/metrics" | awk '$1 == "steeple_lua_heap_bytes" { print int($2 / 1024) }')
    echo "$nominal ${heap:--}" >> "$work/heap"
    line="$el $(rss_now "$master")" shown="$el\t$(rss_now "$master")"
    for w in "${wpids[@]}"; do
        r=$(rss_now "$w")
        lo=${wmin[$w]:-$r} hi=${wmax[$w]:-$r}
        if [ "$r" != - ]; then
            [ "$lo" = - ] || [ "$r" -lt "$lo" ] && lo=$r
            [ "$hi" = - ] || [ "$r" -gt "$hi" ] && hi=$r
        fi
        line="$line $r $lo $hi" shown="$shown\t$r [$lo..$hi]"
    done
    wmin=() wmax=()
    echo "$nominal $line" >> "$work/rss"
    printf '%b\tlua heap %s KiB\n' "$shown" "${heap:--}"
    [ "$nominal" -ge "$DURATION" ] && break
    nominal=$((nominal + SAMPLE_S))
    [ "$nominal" -gt "$DURATION" ] && nominal=$DURATION
done
hwms="master $(hwm "$master")"
for w in "${wpids[@]}"; do hwms="$hwms, w($w) $(hwm "$w")"; done
failed=0
for p in "${loads[@]}"; do wait "$p" || failed=1; done
loads=()
[ "$failed" = 0 ] || die "a wrk failed: $(cat "$work/wrk_logins" "$work/wrk_reads" "$work/wrk_webhooks")"
sleep 5
line="after the load, 5 s idle: master $(rss_now "$master")"
for w in "${wpids[@]}"; do line="$line, w($w) $(rss_now "$w")"; done
echo "$line KiB"
sleep 1 # webhooks cut off by wrk's stop may still commit
after=$(stored_rows)
stop_server

# --- report -----------------------------------------------------------------------
wrk_line() { # name file → one line: requests, req/s, statuses, non-2xx, errors
    awk -v name="$1" '
        /requests in/ { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { sock = $0; sub(/^ *Socket errors: */, "", sock) }
        $1 == "status" { st = st " " $2 "x" $3 }
        $1 == "timeouts" { to = $2 }
        END {
            printf "%s: %d requests, %.1f req/s; statuses:%s; non-2xx %d", name, n, rps, st, non2xx + 0
            if (sock != "") printf "; socket errors: %s", sock
            else if (to > 0) printf "; timeouts %d", to
            printf "\n"
        }' "$2"
}
echo "--- requests (wrk, ${DURATION} s) ---"
wrk_line "logins (4 connections)" "$work/wrk_logins"
wrk_line "reads (8 connections)" "$work/wrk_reads"
wrk_line "webhooks (16 connections)" "$work/wrk_webhooks"
echo "webhooks: $(field stored "$work/wrk_webhooks") stored, $(field duplicate "$work/wrk_webhooks") duplicate," \
     "$(field spooled "$work/wrk_webhooks") spooled; wrk went round the $WEBHOOK_N signed requests" \
     "$(field wrapped "$work/wrk_webhooks") times; $((after - before)) new rows in the databases"

echo "--- RSS (KiB) ---"
nw=${#wpids[@]}
if [ "$WARMUP_S" -lt "$DURATION" ]; then warm_at=$WARMUP_S; else warm_at=$SAMPLE_S; fi
# per process: warm-up, end, growth, ratio, KiB/min fitted over the samples
# from warm-up on, max; for the workers also on their window minima (floors).
awk -v warm="$warm_at" -v nw="$nw" -v master="$master" -v wl="${wpids[*]}" '
    function fit(c, from,    r, x, y, n, sx, sy, sxx, sxy) {
        n = sx = sy = sxx = sxy = 0
        for (r = from; r <= rows; r++) if (v[r, c] != "-") {
            x = el[r] / 60; y = v[r, c]; n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
        return (n > 1 && n * sxx - sx * sx > 0) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0
    }
    function maxof(c,    r, mx) {
        mx = 0
        for (r = 1; r <= rows; r++) if (v[r, c] != "-" && v[r, c] + 0 > mx) mx = v[r, c] + 0
        return mx
    }
    function growth(what, c,    a, b) {
        a = v[w, c]; b = v[rows, c]
        if (a == "-" || b == "-") return what ": gone during the run"
        return sprintf("%s %d -> %d KiB: %+d KiB, ratio %.3f, fitted %+.0f KiB/min", what, a, b, b - a, b / a, fit(c, w))
    }
    { nom[NR] = $1; el[NR] = $2; for (c = 3; c <= NF; c++) v[NR, c] = $c; rows = NR }
    END {
        split(wl, wp, " ")
        w = 0
        for (r = 1; r <= rows; r++) if (nom[r] == warm) w = r
        if (w == 0) w = 2
        printf "warm-up sample: %d s; end sample: %d s\n", el[w], el[rows]
        printf "master (%s): %s; max %d\n", master, growth("sampled", 3), maxof(3)
        overall = maxof(3)
        for (k = 1; k <= nw; k++) {
            c = 4 + 3 * (k - 1)
            printf "worker %d (%s): %s; max %d\n", k, wp[k], growth("sampled", c), maxof(c)
            printf "worker %d (%s): %s; window max %d\n", k, wp[k], growth("floor (window min)", c + 1), maxof(c + 2)
            if (maxof(c + 2) > overall) overall = maxof(c + 2)
        }
        printf "max RSS seen (any process, sampled or polled): %d KiB\n", overall
    }' "$work/rss"
echo "VmHWM (peak RSS) at the end of the load: $hwms KiB"
awk -v warm="$WARMUP_S" '$2 != "-" { if ($1 >= warm && first == "") first = $2; last = $2; if ($2 > max) max = $2 }
    END { if (first != "") printf "Lua heap, both workers (KiB): %d after warm-up -> %d at the end, max %d\n", first, last, max }' "$work/heap"
[ "$restarts" = 0 ] || echo "WARNING: the worker set changed $restarts times during the run"

errors=$(grep -c '"level":"error"' "$work/log" || true)
warns=$(grep -c '"level":"warn"' "$work/log" || true)
spooled_left=$(find "$work/spool" -name '*.spool' -size +0c 2>/dev/null | wc -l)
echo "--- server log: $errors error lines, $warns warn lines; non-empty spool segments left: $spooled_left ---"
if [ "$errors" != 0 ] || [ "$warns" != 0 ]; then # their messages, most frequent first
    grep -E '"level":"(warn|error)"' "$work/log" | sed -E 's/.*"level":"([a-z]+)".*"msg":"(([^"\\]|\\.)*)".*/\1: \2/' |
        sort | uniq -c | sort -rn | head -5
fi
