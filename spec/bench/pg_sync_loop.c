/* pg_sync_loop.c — the baseline of bench_db.sh: N one-row queries with
 * synchronous libpq on one connection, as fast as they go.
 *
 *   pg_sync_loop URL N    prints the elapsed seconds */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pg_sync_loop URL N\n");
        return 2;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "%s", PQerrorMessage(c));
        return 1;
    }
    long n = atol(argv[2]);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        char num[24];
        snprintf(num, sizeof num, "%ld", i);
        const char *values[1] = {num};
        PGresult *r = PQexecParams(c, "SELECT $1::int AS n", 1, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || atol(PQgetvalue(r, 0, 0)) != i) {
            fprintf(stderr, "query failed: %s", PQerrorMessage(c));
            return 1;
        }
        PQclear(r);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
    PQfinish(c);
    return 0;
}
