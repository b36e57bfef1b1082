# shellcheck shell=bash
# pg_stat_statements in a bench's private cluster, for the benches that say
# where the database's time goes (bench_broadcasts.sh, and
# bench_messaging.sh with PGSS=1). The caller defines sql DATABASE SQL.
#
#   pgss_conf DATADIR   loads the extension at the cluster's next start
#   pgss_reset          forgets the statements' figures
#   pgss_report         the costliest statements since (every database,
#                       nested ones too: executing + planning) and the totals

pgss_conf() {
    printf '%s\n' "shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track = all" \
        "pg_stat_statements.track_planning = on" >> "$1/postgresql.conf"
}

pgss_reset() {
    sql steeple "SELECT pg_stat_statements_reset()" >/dev/null
}

pgss_report() {
    echo "  statements by time (pg_stat_statements, every database, nested ones too: executing + planning):"
    sql steeple "SELECT lpad(round(sum(total_exec_time))::text, 7) || ' + ' || rpad(round(sum(total_plan_time))::text || ' ms', 9)
            || lpad(sum(calls)::text, 8) || ' calls ' || lpad(round((sum(total_exec_time + total_plan_time)
            / greatest(sum(calls), 1))::numeric, 3)::text, 7) || ' ms/call ' || lpad(sum(rows)::text, 8) || ' rows  '
            || left(regexp_replace(query, '\s+', ' ', 'g'), 70)
        FROM pg_stat_statements GROUP BY query ORDER BY sum(total_exec_time + total_plan_time) DESC LIMIT 14" |
        sed 's/^/    /'
    sql steeple "SELECT 'all statements: ' || round((sum(total_exec_time) / 1000)::numeric, 1) || ' s executing (top level: '
            || round((sum(total_exec_time) FILTER (WHERE toplevel) / 1000)::numeric, 1) || ' s), '
            || round((sum(total_plan_time) / 1000)::numeric, 1) || ' s planning, '
            || sum(calls) FILTER (WHERE toplevel) || ' top-level calls'
        FROM pg_stat_statements" | sed 's/^/    /'
}
