# shellcheck shell=bash
# CPU seconds of the processes a bench measures, read from /proc with
# builtins only (sampling costs little). Sourced by bench_broadcasts.sh and
# bench_messaging.sh.
#
#   pg_cpu PGDIR     the cluster's CPU seconds so far (user + system): its
#                    postmaster, its live children and the children it has
#                    reaped (backends that ended)
#   proc_cpu PID...  their CPU seconds so far

CPU_TCK=$(getconf CLK_TCK)

stat_ticks() { # pid [with-children] → its CPU ticks (0 when gone)
    local line s
    { read -r line < "/proc/$1/stat"; } 2>/dev/null || { echo 0; return; }
    read -r -a s <<< "${line##*) }"
    if [ -n "${2:-}" ]; then echo $((s[11] + s[12] + s[13] + s[14])); else echo $((s[11] + s[12])); fi
}

cpu_seconds() { awk -v t="$1" -v k="$CPU_TCK" 'BEGIN { printf "%.2f", t / k }'; }

pg_cpu() {
    local master p ticks
    master=$(head -1 "$1/data/postmaster.pid")
    ticks=$(stat_ticks "$master" children)
    for p in $(ps -o pid= --ppid "$master"); do ticks=$((ticks + $(stat_ticks "$p"))); done
    cpu_seconds "$ticks"
}

proc_cpu() {
    local p ticks=0
    for p in "$@"; do ticks=$((ticks + $(stat_ticks "$p"))); done
    cpu_seconds "$ticks"
}
