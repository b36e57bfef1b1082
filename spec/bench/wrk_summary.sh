# wrk's summary, for the benches that drive load with wrk (sourced):
# wrk_summary FILE → "req_per_s p99_ms requests non2xx detail". Requests and
# statuses come from a wrk script whose done() prints "status CODE COUNT" per
# status and "timeouts N"; without one they read 0.
wrk_summary() {
    awk 'function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0 }
         $1 == "99%" { p99 = ms($2) }
         $1 == "status" { n[$2] = $3 }
         $1 == "timeouts" { to = $2 }
         /^Requests\/sec:/ { rps = $2 }
         END {
             bad = 0; all = 0; detail = ""
             for (c in n) { all += n[c]; if (c < 200 || c > 299) { bad += n[c]; detail = detail " " c "x" n[c] } }
             if (to > 0) { bad += to; detail = detail " timeouts x" to }
             printf "%.1f %.2f %d %d%s\n", rps, p99, all, bad, detail
         }' "$1"
}
