/* pg_server.h — one database server as a worker's pools see it: how it is
 * known (key, alias, name), its libpq keywords, its slot in the node's
 * budget, its metric series, the lists its pools share and its circuit
 * breaker: after `breaker_failures` consecutive failed connects it fails
 * fast for `breaker_open_s`, then lets one probe through. Only the files of
 * the pools (pg_pool_internal.h) and the cluster use it; the API is
 * pg_pool.h. Free of Lua. */
#ifndef STEEPLE_PG_SERVER_H
#define STEEPLE_PG_SERVER_H

#include "metrics.h"
#include "pg_settings.h"

#include <stddef.h>
#include <sys/queue.h>

/* Connects in progress to one server, per worker. Setting a connection up
 * costs the server CPU: more at once only makes each slower (until they time
 * out), not more of them per second. */
#define CONNECTING_MAX 4

/* Why a connection was opened or closed: the `reason` label of
 * steeple_db_connects_total and steeple_db_closes_total. */
enum open_reason { OPEN_FREE, OPEN_EVICT, OPEN_HANDOVER, OPEN_NREASONS };
enum close_reason { CLOSE_EVICT, CLOSE_HANDOVER, CLOSE_SHED, CLOSE_IDLE, CLOSE_ERROR, CLOSE_RETIRED,
                    CLOSE_NREASONS };

struct pconn;
struct pg_pool;
TAILQ_HEAD(pconn_list, pconn);
TAILQ_HEAD(pool_list, pg_pool);
TAILQ_HEAD(server_list, pg_server);

struct server_metrics {
    int opened[OPEN_NREASONS];
    int closed[CLOSE_NREASONS];
    struct metrics_histogram wait;
    char label[160]; /* server="name", escaped */
};

struct pg_server {
    char key[96];     /* what the registry records and db.pool() takes */
    char alias[96];   /* "" or a second key that finds it (see pg_server_names) */
    char name[64];    /* its name in metrics and logs */
    char dbname[64];  /* the database of the URL */
    char **kw, **val; /* libpq keywords with slots for dbname and options */
    int dbname_slot;
    int slot;            /* in the node's budget */
    int nconnecting;     /* this worker's connects in progress */
    int busy;            /* this worker's busy pools at the last tick */
    double connect_cost; /* seconds a connect takes (moving average), 0 = none yet */
    double hold;         /* seconds a use holds a connection, over all pools */
    struct pool_list waiting; /* pools with waiters */
    struct pconn_list idle;   /* idle connections, least recently used first */
    int failures;             /* the breaker */
    double open_until;
    int probing;
    int tenants; /* holds tenant databases */
    struct server_metrics m;
    TAILQ_ENTRY(pg_server) link; /* the cluster's servers, in the order added */
};

/* A server known as key (alias: "" or NULL for none; name: NULL for the
 * key), from a libpq URL or keyword string, its connections started with
 * `options` (the statement timeout), with its slot in the node's budget
 * (registered with cap unless the master did already) and its metric
 * series. Returns it (the caller frees it with server_free), or NULL with a
 * message. The names must fit (the caller checks their length). */
struct pg_server *server_new(const char *key, const char *alias, const char *name,
                             const char *url, const char *options, int cap, char *err,
                             size_t errlen) __attribute__((warn_unused_result));
void server_free(struct pg_server *s);

/* Whether the breaker lets a connect start now; else *retry_after is set. */
int server_breaker_allows(struct pg_server *srv, const struct pg_settings *s,
                          double *retry_after);
/* Whether a connect may start now: the breaker allows it and fewer than
 * CONNECTING_MAX are in progress. */
int server_may_connect(struct pg_server *srv, const struct pg_settings *s);
/* Counts a connect's outcome for the breaker. */
void server_breaker_result(struct pg_server *srv, const struct pg_settings *s, int ok,
                           const char *err);

#endif
