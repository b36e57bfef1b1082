/* pg_pool_internal.h — what the files of the pools share, and what the
 * cluster that holds them reaches of them; nothing else includes it (the API
 * is pg_pool.h). Free of Lua.
 *
 *   pg_pool.c         a pool: its connections by state, its waiters,
 *                     connecting, acquire and release
 *   pg_pool_budget.c  how a server's pools spend its node-wide budget: their
 *                     demand, room for a starving pool, growth, hand-over
 *
 * and beside them, each a module of its own:
 *
 *   pg_server.c       a server: names, URL, metric series, the breaker
 *                     (pg_server.h); the pools use it
 *   pg_cluster.c      the servers and pools of a worker (LRU up to the
 *                     capacity), its timers, gauges, creation and shutdown;
 *                     it uses the pools
 *
 * A connection is in exactly one list of its pool, by state (connecting,
 * idle, active), and pg_pool.c alone moves it; an idle one is also in its
 * server's idle list, least recently used first. A pool with waiters is on
 * its server's waiting list; it starves when it has no connection at all.
 *
 * Decisions happen at a few points: a wait, a release, a connect ending, and
 * two timers (the tick, every TICK_S, and the poll, every POLL_S while a pool
 * starves for want of room). Each one ends by publishing this worker's demand
 * (busy and starving pools) in the shared budget, where the other workers read
 * it. */
#ifndef STEEPLE_PG_POOL_INTERNAL_H
#define STEEPLE_PG_POOL_INTERNAL_H

#include "pg_pool.h"
#include "pg_server.h"

#include <event2/event.h>
#include <sys/queue.h>

#define TICK_S 0.1        /* recounts busy pools, sheds for other workers */
#define POLL_S 0.005      /* while a pool starves: looks for room again */

enum pc_state { PC_CONNECTING, PC_IDLE, PC_ACTIVE, PC_NSTATES };
#define PC_NONE PC_NSTATES /* not in any list: new, or being closed */

struct pconn {
    struct pg_conn *conn;
    struct pg_pool *pool;
    int state;          /* enum pc_state, or PC_NONE */
    double opened_at;   /* its connect started */
    double idle_since;  /* while idle */
    double acquired_at; /* while active: since when a request holds it */
    TAILQ_ENTRY(pconn) by_state; /* the pool's list of its state */
    TAILQ_ENTRY(pconn) by_idle;  /* while idle: the server's, least recently used first */
};

struct pg_waiter {
    struct pg_pool *pool;
    pg_acquire_cb cb;
    void *arg;
    struct event *timer;
    double since;
    double deadline; /* when its timer fires */
    TAILQ_ENTRY(pg_waiter) link;
};
TAILQ_HEAD(waiter_list, pg_waiter);

struct pg_pool {
    struct pg_cluster *cl;
    struct pg_server *server;
    char dbname[64];
    struct pconn_list conns[PC_NSTATES];
    int n[PC_NSTATES];
    struct waiter_list waiters; /* first come, first served */
    int nwait;
    int on_waiting; /* in server->waiting */
    int retired;
    double last_used;
    double hold;          /* seconds a use holds a connection (moving average), 0 = none yet */
    double last_acquire;  /* when a request last asked for a connection */
    double gap;           /* seconds between those asks (moving average), 0 = none yet */
    double gave_up_at;    /* gave a connection up for another pool: no growth for a while */
    double refused_until; /* the server refused this database: waits fail until then */
    struct event *kick;   /* serves waiters from the loop when idle connections wait */
    TAILQ_ENTRY(pg_pool) lru;        /* the cluster's list, most recently used first */
    TAILQ_ENTRY(pg_pool) by_waiting; /* server->waiting */
};

struct pg_cluster {
    struct event_base *base;
    struct pg_settings s;
    struct server_list servers; /* in the order added */
    struct pool_list pools; /* most recently used first */
    int npools;             /* not retired */
    struct event *sweep;    /* every second: idle timeouts, unused pools, gauges */
    struct event *tick;     /* every TICK_S */
    struct event *poll;     /* armed while a pool starves */
    char options[64];
};

static inline int pool_total(const struct pg_pool *p)
{
    return p->n[PC_CONNECTING] + p->n[PC_IDLE] + p->n[PC_ACTIVE];
}

/* ---- pg_pool.c ---------------------------------------------------------- */

/* A new pool of srv's database dbname (not yet in the cluster's list), or
 * NULL. */
struct pg_pool *pool_new(struct pg_cluster *cl, struct pg_server *srv, const char *dbname);
/* Frees a pool with no connection and no waiter left. */
void pool_free(struct pg_pool *p);
void pool_fail_waiters(struct pg_pool *p, const char *err, double retry);
/* Closes a connection. With keep_unit its budget unit stays with the caller,
 * who starts a connect on it next. */
void pconn_close(struct pconn *pc, enum close_reason why, int keep_unit);
/* Starts a connect for p on a budget unit the caller holds; on failure the
 * unit is given back. Returns 0, or -1. */
int pool_connect(struct pg_pool *p, enum open_reason why);

/* ---- pg_pool_budget.c --------------------------------------------------- */

/* Gives what room there is to the server's pools, starving ones first and
 * the longest waiting of them first, then publishes this worker's demand. */
void server_offer(struct pg_server *srv, struct pg_cluster *cl);
/* Publishes this worker's demand for srv's connections as it is now. */
void server_publish(struct pg_server *srv, double now);
/* Idle connections closed for other workers' starving pools. */
void server_shed(struct pg_server *srv, double now);
/* Waiters of p wait for its own connections unless they need another. */
void pool_need(struct pg_pool *p);
/* Whether a connection coming back (or just opened with nobody left to take
 * it) goes to a starving pool instead; 1 when pc was closed for it. */
int pool_give_up(struct pconn *pc, double now);

#endif
