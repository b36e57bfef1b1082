/* pg_pool.h — bounded connection pools, one per (server, database), for one
 * worker. Free of Lua.
 *
 * Every connection is in exactly one state list of its pool (connecting,
 * idle, active); pg_pool moves it with one function. Idle lists are LIFO;
 * waiters queue FIFO with a deadline and a released connection goes to the
 * first of them. The connections of a server, over all pools and all the
 * node's workers, spend one budget (pg_budget.h): a pool waits for its own
 * connections rather than open more, room is made only for a pool that has
 * none, and connections rotate between pools only when the busy ones
 * outnumber the budget (see pg_pool_budget.c and README "Databases"). Each
 * server has a circuit breaker: after `breaker_failures` consecutive failed
 * connects it fails fast for `breaker_open_s`, then lets one probe through.
 * Pools are kept in LRU order up to `capacity`; the least recently used
 * beyond it is retired (its connections close as they come back). */
#ifndef STEEPLE_PG_POOL_H
#define STEEPLE_PG_POOL_H

#include "pg_settings.h"

#include <stddef.h>

struct event_base;
struct pg_conn;
struct pg_cluster;
struct pg_pool;
struct pg_waiter;

struct pg_cluster *pg_cluster_new(struct event_base *base, const struct pg_settings *s)
    __attribute__((warn_unused_result));
/* Closes every connection (queries in flight are abandoned) and frees. */
void pg_cluster_free(struct pg_cluster *cl);

/* How a server is known. `key` is what the registry records, what
 * pg_cluster_pool() and the other calls take, and its slot in the shared
 * budget; `alias` (NULL: none) finds the server too (the address that
 * registrations recorded before it was given a name); `name` (NULL: the key)
 * is how metrics and logs call it. */
struct pg_server_names {
    const char *key, *alias, *name;
};

/* Adds a server from a libpq URL or keyword string; `cap` is its connection
 * budget over all the node's workers (the slot of its key in the shared
 * budget, registered with cap unless the master did already). Returns 0, or
 * -1 with a message (a key, alias or name that another server has is
 * refused). */
int pg_cluster_add_server(struct pg_cluster *cl, const struct pg_server_names *id,
                          const char *url, int cap, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The key of the server that `key` finds (by its key or its alias), or NULL. */
const char *pg_cluster_server_key(const struct pg_cluster *cl, const char *key);
/* The database named in a server's URL (the registry, or the maintenance
 * database of a tenant server), or NULL for an unknown key. */
const char *pg_cluster_server_dbname(const struct pg_cluster *cl, const char *key);
/* Marks a server as one that holds tenant databases. Returns 0, or -1 for an
 * unknown key. */
int pg_cluster_hold_tenants(struct pg_cluster *cl, const char *key);
/* Server keys in the order they were added (only those holding tenants when
 * tenants_only); returns the count. */
int pg_cluster_server_keys(const struct pg_cluster *cl, const char **keys, int max,
                           int tenants_only);

/* The pool of (server, database), created on first use and moved to the
 * front of the LRU. NULL with a message for an unknown server. */
struct pg_pool *pg_cluster_pool(struct pg_cluster *cl, const char *server, const char *dbname,
                                char *err, size_t errlen);

/* Closes the pools of a database (e.g. before dropping it): idle connections
 * at once, busy ones when they come back. */
void pg_cluster_close_database(struct pg_cluster *cl, const char *server, const char *dbname);

/* Acquire result: a connection, or NULL with a message; retry_after > 0 when
 * the server's breaker is open or the wait timed out. */
typedef void (*pg_acquire_cb)(struct pg_conn *c, const char *err, double retry_after,
                              void *arg);

/* An idle connection now, or NULL. */
struct pg_conn *pg_pool_try_acquire(struct pg_pool *p);
/* Queues for a connection, waiting at most the acquire timeout or max_wait_s
 * if that is shorter. Returns the waiter, or NULL when the request must fail
 * at once (breaker open): then *retry_after and err are set. The callback
 * comes later, from the loop, exactly once unless cancelled. */
struct pg_waiter *pg_pool_wait(struct pg_pool *p, double max_wait_s, pg_acquire_cb cb, void *arg,
                               double *retry_after, char *err, size_t errlen);
void pg_waiter_cancel(struct pg_waiter *w);

/* Gives a connection back; `reusable` = 0 closes it (it saw an error). */
void pg_pool_release(struct pg_conn *c, int reusable);

/* The settings in force (statement timeout for queries). */
const struct pg_settings *pg_cluster_settings(const struct pg_cluster *cl);
struct pg_cluster *pg_pool_cluster(const struct pg_pool *p);

/* Publishes connection and pool gauges to the metrics table. */
void pg_cluster_report(struct pg_cluster *cl);
/* Declares the database metric families and makes a series of each for
 * every server (0 until counted), so that /metrics shows them from the start. */
void pg_cluster_declare_metrics(struct pg_cluster *cl);

#endif
