#!/usr/bin/env bash
# Authentication benchmarks, in one run on a private cluster (var/bench-pg):
#  - registration: p50/p99 of REGS sequential registrations and the wall time
#    of CONC concurrent ones, with db.template = "steeple_template" and again
#    with "none" (an empty database plus the tenant migrations), and the
#    ratios none/template;
#  - login throughput (wrk, 16 connections, LOGIN_S seconds) against a server
#    of WORKERS workers x THREADS hashing threads, vs raw argon2id verifies/s
#    of argon_rate.c with as many threads for ARGON_S seconds (ratio, target
#    >= 0.9); the same with a wrong password and with an unknown email (ratios
#    to the right password); ROUNDS alternating rounds of all four, the
#    ratios taken over their sums, as the machine's load drifts; and the
#    right password over the owners of CHURCHES churches (each login needs
#    its own church's database) against one church: ratio and non-2xx;
#  - GET /health alone (wrk, 2 connections, HEALTH_S seconds) and under a
#    login flood: p50/p99 and the ratio of the p99s.
# The server runs with STEEPLE_AUTH_RATE_PER_MIN=0 and fixed bench keys.
#
#   REGS=20 CONC=20 CHURCHES=20 ROUNDS=2 LOGIN_S=10 ARGON_S=5 HEALTH_S=5 WORKERS=1 THREADS=2 \
#   ARGON2_KIB=19456 ARGON2_ITER=2 KEEP=1 bash spec/bench/bench_auth.sh
#
# CONC must stay within the hashing queue (THREADS x 16 per worker), or the
# surplus registrations get 503 and the script stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
REGS=${REGS:-20}
CONC=${CONC:-20}
CHURCHES=${CHURCHES:-20}
ROUNDS=${ROUNDS:-2}
LOGIN_S=${LOGIN_S:-10}
ARGON_S=${ARGON_S:-5}
HEALTH_S=${HEALTH_S:-5}
WORKERS=${WORKERS:-1}
THREADS=${THREADS:-2}
ARGON2_KIB=${ARGON2_KIB:-19456}
ARGON2_ITER=${ARGON2_ITER:-2}
BIN=$PWD/build/steeple
PGDIR=var/bench-pg
PASSWORD=bench-password-123
run=$(date +%s)-$$
work=$(mktemp -d)
pid='' flood=''
stop_server() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    pid=
}
cleanup() {
    if [ -n "$flood" ]; then kill "$flood" 2>/dev/null || true; wait "$flood" 2>/dev/null || true; fi
    stop_server
    bash scripts/pg.sh --dir "$PGDIR" --port 5439 destroy >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
die() { echo "bench_auth: $*" >&2; exit 1; }

bash scripts/pg.sh --dir "$PGDIR" --port 5439 start
export DATABASE_URL
DATABASE_URL=$(bash scripts/pg.sh --dir "$PGDIR" --port 5439 url)
export STEEPLE_TENANT_DATABASE_URLS=
export STEEPLE_JWT_SECRET=steeple-bench-jwt-secret-of-at-least-32-bytes
export STEEPLE_DATA_KEY=c3RlZXBsZS1iZW5jaC1kYXRhLWtleS0zMi1ieXRlcyE= # "steeple-bench-data-key-32-bytes!"
export STEEPLE_AUTH_RATE_PER_MIN=0
"$BIN" migrate registry >/dev/null
"$BIN" migrate tenants >/dev/null

percentile() { # p < numbers on stdin
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; printf "%.2f", v[i] * 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

start_server() { # db.template
    local port
    port=$(lua5.4 -e 's=require("socket").bind("127.0.0.1",0); local _, p = s:getsockname(); print(p); s:close()')
    cat > "$work/config.lua" <<CFG
return { port = $port, workers = $WORKERS, threads = $THREADS, log = { level = "warn" },
         limits = { request_timeout_s = 120 },
         db = { template = "$1", acquire_timeout_ms = 60000 },
         tenants = { max_provisioning = $CONC },
         auth = { argon2_memory_kib = $ARGON2_KIB, argon2_iterations = $ARGON2_ITER, max_failures = 100 } }
CFG
    "$BIN" serve --config "$work/config.lua" 2>>"$work/log" &
    pid=$!
    base=http://127.0.0.1:$port
    for _ in $(seq 100); do
        curl -sf "$base/health" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/log" >&2
    die "the server (db.template = $1) did not start"
}

post() { # path json [extra curl args] → "status time_total", the body in $work/body
    curl -s -o "$work/body" -w '%{http_code} %{time_total}\n' -X POST -H 'Content-Type: application/json' \
        "${@:3}" --data "$2" "$base$1"
}
register_json() { # email
    printf '{"churchName":"Bench Church %s","email":"%s","password":"%s","adminName":"Bench Admin"}' "$1" "$1" "$PASSWORD"
}

# --- registration: template vs migrations --------------------------------------
registrations() { # tag → "$work/seq_<tag>" (seconds per registration), "$work/conc_<tag>" (wall seconds)
    local tag=$1 i status t
    for i in $(seq "$REGS"); do
        read -r status t < <(post /api/auth/register "$(register_json "seq-$tag-$run-$i@bench.example")")
        [ "$status" = 201 ] || { cat "$work/body" >&2; echo >&2; tail -20 "$work/log" >&2
            die "sequential registration $i ($tag) answered $status, not 201"; }
        echo "$t"
    done > "$work/seq_$tag"
    local t0 t1 pids=()
    t0=$(date +%s.%N)
    for i in $(seq "$CONC"); do
        curl -s -o "$work/conc_body_$tag$i" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
            --data "$(register_json "conc-$tag-$run-$i@bench.example")" "$base/api/auth/register" \
            > "$work/conc_status_$tag$i" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    t1=$(date +%s.%N)
    local bad=0
    for i in $(seq "$CONC"); do
        status=$(cat "$work/conc_status_$tag$i")
        if [ "$status" != 201 ]; then
            bad=$((bad + 1))
            echo "concurrent registration $i ($tag): $status $(cat "$work/conc_body_$tag$i" 2>/dev/null ||
                echo "(no response)")" >&2
        fi
    done
    [ "$bad" = 0 ] || { tail -20 "$work/log" >&2; die "$bad of $CONC concurrent registrations ($tag) did not get 201"; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }' > "$work/conc_$tag"
    echo "registration, db.template = $2: sequential p50 $(percentile 50 < "$work/seq_$tag") ms," \
         "p99 $(percentile 99 < "$work/seq_$tag") ms ($REGS); $CONC concurrent: $(cat "$work/conc_$tag") s wall"
}

start_server steeple_template
registrations tmpl steeple_template
stop_server
start_server none
registrations migr none
stop_server
reg_p50=$(ratio "$(percentile 50 < "$work/seq_migr")" "$(percentile 50 < "$work/seq_tmpl")")
reg_conc=$(ratio "$(cat "$work/conc_migr")" "$(cat "$work/conc_tmpl")")
echo "registration, migrations/template: p50 ratio $reg_p50, concurrent wall ratio $reg_conc"

# --- login throughput vs raw argon2id ------------------------------------------
hashers=$((WORKERS * THREADS))
cc -O2 -pthread -o "$work/argon_rate" spec/bench/argon_rate.c $(pkg-config --cflags --libs libsodium)

start_server steeple_template
owner=login-$run@bench.example
read -r status _ < <(post /api/auth/register "$(register_json "$owner")")
[ "$status" = 201 ] || { cat "$work/body" >&2; echo >&2; die "registering the login account answered $status"; }
token=$(sed 's/.*"accessToken":"\([^"]*\)".*/\1/' "$work/body")
owners=("$owner")
for i in $(seq 2 "$CHURCHES"); do
    e=owner-$run-$i@bench.example
    read -r status _ < <(post /api/auth/register "$(register_json "$e")")
    [ "$status" = 201 ] || { cat "$work/body" >&2; echo >&2; die "registering church $i answered $status"; }
    owners+=("$e")
done

# wrk script: POST /api/auth/login for each of the given emails in turn, one
# password; done() prints "status CODE COUNT" per status and "duration_us N".
login_script() { # file password email...
    local file=$1 pw=$2 list=
    shift 2
    for e in "$@"; do list="$list\"$e\", "; done
    cat > "$file" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local emails = { $list}
local password = "$pw"
wrk.body = '{"email":"' .. emails[1] .. '","password":"' .. password .. '"}'
if #emails > 1 then
    local i = 0
    request = function()
        i = i % #emails + 1
        return wrk.format(nil, nil, nil, '{"email":"' .. emails[i] .. '","password":"' .. password .. '"}')
    end
end
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function init() statuses = {} end
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary)
    local total = {}
    for _, t in ipairs(threads) do
        for code, n in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + n end
    end
    for code, n in pairs(total) do print("status " .. code .. " " .. n) end
    print("duration_us " .. summary.duration)
    print("timeouts " .. summary.errors.timeout)
end
LUA
}

login_wrk() { # script seconds expected-status name → "$work/wrk_<name>";
               # prints "rate_of_expected unexpected_count wrk_non2xx unexpected_detail"
    local out=$work/wrk_$4
    wrk -t1 -c16 -d"${2}s" --timeout 10s -s "$1" "$base/api/auth/login" > "$out" 2>&1 || die "wrk failed: $(cat "$out")"
    awk -v want="$3" '
        $1 == "status" { n[$2] = $3 }
        $1 == "duration_us" { d = $2 / 1e6 }
        $1 == "timeouts" { to = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        END {
            other = 0; detail = ""
            for (c in n) if (c != want) { other += n[c]; detail = detail " " c "x" n[c] }
            if (to > 0) detail = detail " timeouts x" to
            printf "%.2f %d %d%s\n", n[want] / d, other, non2xx + 0, detail
        }' "$out"
}
login_line() { # round label rate other non2xx [detail]
    local round=$1 label=$2 rate=$3 other=$4 non2xx=$5
    shift 5
    if [ "$other" = 0 ]; then
        echo "round $round: login, $label: $rate/s (every response as expected; wrk non-2xx $non2xx)"
    else
        echo "round $round: login, $label: $rate/s ($other unexpected responses:$*; wrk non-2xx $non2xx)"
    fi
}
sum() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }

raw_rate() { "$work/argon_rate" "$hashers" "$ARGON_S" "$ARGON2_ITER" "$ARGON2_KIB" || die "argon_rate failed"; }
login_script "$work/right.lua" "$PASSWORD" "$owner"
login_script "$work/unknown.lua" "$PASSWORD" "nobody-$run@bench.example"
login_script "$work/many.lua" "$PASSWORD" "${owners[@]}"
echo "login: wrk 16 connections, ${LOGIN_S} s per run; raw argon2id: argon_rate.c, $hashers threads, ${ARGON_S} s per run"
raw_sum=0 right_sum=0 wrong_sum=0 unknown_sum=0 many_sum=0 many_other=0
for round in $(seq "$ROUNDS"); do
    raw=$(raw_rate)
    echo "round $round: raw argon2id verifies: $raw/s"
    read -r right other non2xx detail < <(login_wrk "$work/right.lua" "$LOGIN_S" 200 "right$round")
    login_line "$round" "right password (200)" "$right" "$other" "$non2xx" "$detail"
    # The wrong password goes round enough fresh admins of the church that
    # none reaches auth.max_failures (100) and gets locked (429) in the run.
    nwrong=$(awk -v r="$right" -v s="$LOGIN_S" 'BEGIN { n = int(r * s * 1.5 / 90) + 1; print (n < 4 ? 4 : n) }')
    wrong_emails=()
    for i in $(seq "$nwrong"); do
        e=wrong-$run-$round-$i@bench.example
        read -r status _ < <(post /api/admins \
            "{\"email\":\"$e\",\"password\":\"$PASSWORD\",\"name\":\"Admin $i\",\"role\":\"admin\"}" \
            -H "Authorization: Bearer $token")
        [ "$status" = 201 ] || { cat "$work/body" >&2; echo >&2; die "adding admin $i answered $status"; }
        wrong_emails+=("$e")
    done
    login_script "$work/wrong.lua" "not-the-password" "${wrong_emails[@]}"
    read -r wrong other non2xx detail < <(login_wrk "$work/wrong.lua" "$LOGIN_S" 401 "wrong$round")
    login_line "$round" "wrong password (401, over $nwrong admins)" "$wrong" "$other" "$non2xx" "$detail"
    read -r unknown other non2xx detail < <(login_wrk "$work/unknown.lua" "$LOGIN_S" 401 "unknown$round")
    login_line "$round" "unknown email (401)" "$unknown" "$other" "$non2xx" "$detail"
    read -r many other non2xx detail < <(login_wrk "$work/many.lua" "$LOGIN_S" 200 "many$round")
    login_line "$round" "right password over $CHURCHES churches (200)" "$many" "$other" "$non2xx" "$detail"
    many_sum=$(sum "$many_sum" "$many") many_other=$((many_other + other))
    raw_sum=$(sum "$raw_sum" "$raw") right_sum=$(sum "$right_sum" "$right")
    wrong_sum=$(sum "$wrong_sum" "$wrong") unknown_sum=$(sum "$unknown_sum" "$unknown")
done
login_raw=$(ratio "$right_sum" "$raw_sum")
wrong_right=$(ratio "$wrong_sum" "$right_sum")
unknown_right=$(ratio "$unknown_sum" "$right_sum")
many_right=$(ratio "$many_sum" "$right_sum")
echo "login over $ROUNDS rounds: raw argon2id $(ratio "$raw_sum" "$ROUNDS")/s, right $(ratio "$right_sum" "$ROUNDS")/s," \
     "wrong $(ratio "$wrong_sum" "$ROUNDS")/s, unknown $(ratio "$unknown_sum" "$ROUNDS")/s"
echo "login/raw argon2id: $login_raw (target >= 0.9); wrong/right: $wrong_right; unknown/right: $unknown_right"
echo "login over $CHURCHES churches/one church: $many_right ($many_other responses other than 200)"

# --- /health under a login flood -----------------------------------------------
health_wrk() { # name → "p50_ms p99_ms"
    local out=$work/wrk_$1
    wrk -t1 -c2 -d"${HEALTH_S}s" --latency "$base/health" > "$out" 2>&1 || die "wrk failed: $(cat "$out")"
    awk 'function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0 }
         $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
         END { printf "%.3f %.3f\n", p50, p99 }' "$out"
}
read -r h50 h99 < <(health_wrk health_alone)
echo "GET /health alone (2 connections, ${HEALTH_S} s): p50 $h50 ms, p99 $h99 ms"
login_wrk "$work/right.lua" $((HEALTH_S + 2)) 200 flood > "$work/flood" &
flood=$!
sleep 1
read -r f50 f99 < <(health_wrk health_flood)
wait "$flood"
flood=
read -r frate fother _ fdetail < "$work/flood"
health_ratio=$(ratio "$f99" "$h99")
flood_note="$frate logins/s"
[ "$fother" = 0 ] || flood_note="$flood_note, $fother unexpected responses:$fdetail"
echo "GET /health under a login flood (16 connections, $flood_note): p50 $f50 ms, p99 $f99 ms;" \
     "p99 ratio flood/alone $health_ratio"
stop_server

echo "--- summary ---"
echo "registration migrations/template: p50 $reg_p50, $CONC concurrent wall $reg_conc"
echo "login/raw argon2id ($hashers threads, $ROUNDS rounds): $login_raw (target >= 0.9)"
echo "login wrong/right password: $wrong_right; unknown email/right: $unknown_right"
echo "login over $CHURCHES churches/one church: $many_right ($many_other responses other than 200)"
echo "/health p99 under login flood/alone: $health_ratio"
