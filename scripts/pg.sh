#!/usr/bin/env bash
# Manage a private PostgreSQL 15 cluster that listens only on a unix socket.
#
#   scripts/pg.sh [-v] [--dir DIR] [--port N] [--tcp] start|stop|status|url|destroy
#   scripts/pg.sh [-v] [--dir DIR] [--port N] psql [PSQL-ARGS...]
#
# Layout: DIR/data (cluster), DIR/log (server log), DIR/.s.PGSQL.<port> (socket),
# DIR/tcp_port (with --tcp: it also listens on 127.0.0.1 at that port).
# DIR defaults to $PGDIR_ROOT, else var/pg in the repository. Superuser and
# database are both "steeple", local connections are trusted. As root, initdb
# and postgres run as the "postgres" user (or the existing owner of DIR).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${PGDIR_ROOT:-$repo/var/pg}
port=5432 verbose=0 cmd= tcp=0

die() { echo "pg.sh: $*" >&2; exit 1; }
say() { if (( verbose )); then echo "pg.sh: $*" >&2; fi; }

while (( $# )); do
    case $1 in
        -v) verbose=1 ;;
        --dir) dir=${2:?--dir needs a value}; shift ;;
        --port) port=${2:?--port needs a value}; shift ;;
        --tcp) tcp=1 ;;
        -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
        -*) die "unknown option: $1" ;;
        *) [[ -n $cmd ]] && die "unexpected argument: $1"
           cmd=$1; shift; [[ $cmd == psql ]] && break; continue ;;
    esac
    shift
done
[[ -n $cmd ]] || die "usage: pg.sh [-v] [--dir DIR] [--port N] start|stop|status|url|destroy|psql"
[[ $port =~ ^[0-9]+$ ]] || die "bad port: $port"

dir=$(realpath -m "$dir")
data=$dir/data log=$dir/log marker=$dir/.steeple-pg portfile=$dir/tcp_port
[[ $dir != *\'* ]] || die "directory name must not contain a single quote: $dir"
# A unix socket path is limited to 107 bytes.
(( ${#dir} + ${#port} + 10 <= 107 )) || die "directory path too long for a unix socket: $dir"

bin=/usr/lib/postgresql/15/bin
[[ -x $bin/pg_ctl ]] || bin=$(pg_config --bindir 2>/dev/null) || die "PostgreSQL 15 server binaries not found"

# initdb, pg_ctl and postgres refuse to run as root.
user=$(id -un)
if (( EUID == 0 )); then
    user=postgres
    [[ -d $dir ]] && owner=$(stat -c %U "$dir") && [[ $owner != root ]] && user=$owner
fi
as_owner() {   # fd 9 (the lock below) must not leak into the server
    if (( EUID == 0 )); then (cd / && runuser -u "$user" -- "$@") 9<&-; else "$@" 9<&-; fi
}

# Serialize start/stop/destroy on the same directory (e.g. parallel make jobs).
lock() { exec 9<"$dir" && flock 9; }

# The postmaster's pid if it is really running (a stale postmaster.pid after a
# crash may name a dead, a zombie or an unrelated, reused pid).
server_pid() {
    local pid comm state cwd
    pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && read -r _ comm state _ 2>/dev/null <"/proc/$pid/stat" || return 1
    [[ $comm == "(postgres)" && $state != [ZX] ]] || return 1   # zombie: killed, not reaped
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) && [[ $cwd != "$data" ]] && return 1
    echo "$pid"
}

# Server processes left over from a killed postmaster (their cwd is the data dir).
orphans() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/cwd" 2>/dev/null) == "$data" ]] && echo "${p#/proc/}"
    done
    return 0
}

# After a crash: let orphaned backends exit (they notice the dead postmaster),
# and drop lock files whose pid is alive but not our server (reused pid, or an
# unreaped zombie). Locks with a dead pid are left to postgres to check.
clear_stale() {
    local i f pid
    for (( i = 0; i < 100; i++ )); do
        [[ -z $(orphans) ]] && break
        sleep 0.1
    done
    [[ -z $(orphans) ]] || die "old server processes still running in $data: $(orphans | xargs)"
    for f in "$data/postmaster.pid" "$dir/.s.PGSQL.$port.lock"; do
        pid=$(head -n1 "$f" 2>/dev/null) || continue
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            say "removing stale $f (pid $pid is not our server)"
            rm -f "$f"
        fi
    done
}

show_log() {
    echo "pg.sh: $1; last lines of $log:" >&2
    tail -n 30 "$log" >&2 2>/dev/null || true
    exit 1
}

url() {
    local LC_ALL=C s=$dir out='' c i
    for (( i = 0; i < ${#s}; i++ )); do
        c=${s:i:1}
        case $c in [A-Za-z0-9/._~-]) out+=$c ;; *) out+=$(printf '%%%02X' "'$c") ;; esac
    done
    if (( tcp )); then
        echo "postgresql://steeple@127.0.0.1:$port/steeple"
    else
        echo "postgresql://steeple@/steeple?host=$out&port=$port"
    fi
}

psql_() { "$bin/psql" -X -q -h "$dir" -p "$port" -U steeple "$@"; }

# --tcp: the cluster also listens on 127.0.0.1, on a port chosen once per
# directory (kept in DIR/tcp_port) and free when chosen. Clients then need no
# socket file in the tree. The port lies below the kernel's ephemeral range:
# a port from that range can be taken by any outgoing connection (or a test
# server bound to port 0) between the choice and the bind.
tcp_port() {
    if [[ -f $portfile ]]; then cat "$portfile"; return; fi
    mkdir -p "$dir"
    local low=32768 range=/proc/sys/net/ipv4/ip_local_port_range
    [[ -r $range ]] && read -r low _ < "$range"
    (( low > 21024 )) || low=32768
    local span=$(( low - 20000 - 1000 ))
    local p=$(( 20000 + $(printf '%s' "$dir" | cksum | cut -d' ' -f1) % span ))
    while ss -Htln "sport = :$p" | grep -q .; do p=$(( p + 1 )); done
    echo "$p" > "$portfile"
    echo "$p"
}
if (( tcp )) || [[ -f $portfile ]]; then
    tcp=1
    port=$(tcp_port)
fi

start() {
    if server_pid >/dev/null; then say "already running in $dir"; ensure_db; return; fi
    mkdir -p "$dir"
    lock
    if server_pid >/dev/null; then ensure_db; return; fi
    touch "$marker" "$log"
    if (( EUID == 0 )); then
        chown "$user" "$dir" "$marker" "$log"
        as_owner test -w "$dir" -a -x "$dir" ||
            die "user $user cannot write to $dir (every parent directory needs o+x)"
    fi
    chmod 755 "$dir"
    if [[ ! -f $data/PG_VERSION ]]; then
        say "initdb $data"
        as_owner "$bin/initdb" -D "$data" -U steeple --auth=trust \
            --encoding=UTF8 --locale=C >>"$log" 2>&1 || show_log "initdb failed"
        cat >>"$data/postgresql.conf" <<EOF

# steeple private cluster: unix socket only (socket dir and port given at start)
listen_addresses = ''
max_connections = 300
shared_buffers = 128MB
EOF
    fi
    clear_stale
    say "starting server in $dir (port $port)"
    # pg_ctl warns about a leftover postmaster.pid; only show its output on failure.
    local listen="''"
    (( tcp )) && listen=127.0.0.1
    out=$(as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -s \
        -o "-k '$dir' -p $port -c listen_addresses=$listen" start 2>&1) ||
        { echo "$out" >&2; show_log "server failed to start"; }
    ensure_db
}

ensure_db() {
    [[ $(psql_ -d postgres -tAc "select 1 from pg_database where datname = 'steeple'") == 1 ]] && return
    say "creating database steeple"
    psql_ -d postgres -c 'create database steeple owner steeple' >/dev/null || show_log "createdb failed"
}

stop() {
    [[ -d $dir ]] && lock
    server_pid >/dev/null || { say "not running"; return 0; }
    say "stopping server in $dir"
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 -s stop || show_log "stop failed"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status)
        if pid=$(server_pid); then echo "running (pid $pid) in $dir"; else echo "not running ($dir)"; exit 1; fi ;;
    url) url ;;
    psql) exec "$bin/psql" "$(url)" "$@" ;;
    destroy)
        [[ -d $dir ]] || exit 0
        [[ -e $marker || -z $(ls -A "$dir") ]] || die "refusing to delete $dir: not created by pg.sh"
        stop
        rm -rf "$dir"
        say "removed $dir" ;;
    *) die "unknown command: $cmd" ;;
esac
