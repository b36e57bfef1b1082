/* pg_pool.c — bounded pools per (server, database) that spend each server's
 * node-wide connection budget without thrashing (see pg_pool.h; the budget
 * and the policy's rules are in pg_budget.c).
 *
 * A connection is in exactly one list of its pool, by state (connecting,
 * idle, active), and set_state() alone moves it; an idle one is also in its
 * server's idle list, least recently used first. A pool with waiters is on
 * its server's waiting list; it starves when it has no connection at all.
 *
 * Decisions happen at a few points: a wait, a release, a connect ending, and
 * two timers (the tick, every TICK_S, and the poll, every POLL_S while a pool
 * starves for want of room). Each one ends by publishing this worker's demand
 * (busy and starving pools) in the shared budget, where the other workers read
 * it. */
#include "pg_pool.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pg_budget.h"
#include "pg_conn.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define TICK_S 0.1        /* recounts busy pools, sheds for other workers */
#define POLL_S 0.005      /* while a pool starves: looks for room again */
#define REFUSED_S 1.0     /* a database the server refused fails fast this long */
#define COST_DEFAULT_S 0.01 /* a connect's cost until one is measured */
#define EWMA 0.2          /* weight of a new sample in moving averages */
/* Connects in progress to one server, per worker. Setting a connection up
 * costs the server CPU: more at once only makes each slower (until they time
 * out), not more of them per second. */
#define CONNECTING_MAX 4

enum pc_state { PC_CONNECTING, PC_IDLE, PC_ACTIVE, PC_NSTATES };
#define PC_NONE PC_NSTATES /* not in any list: new, or being closed */

/* Why a connection was opened or closed: the `reason` label of
 * steeple_db_connects_total and steeple_db_closes_total. */
enum open_reason { OPEN_FREE, OPEN_EVICT, OPEN_HANDOVER, OPEN_NREASONS };
enum close_reason { CLOSE_EVICT, CLOSE_HANDOVER, CLOSE_SHED, CLOSE_IDLE, CLOSE_ERROR, CLOSE_RETIRED,
                    CLOSE_NREASONS };
static const char *const open_names[OPEN_NREASONS] = {"free", "evict", "handover"};
static const char *const close_names[CLOSE_NREASONS] = {"evict", "handover", "shed",
                                                        "idle",  "error",    "retired"};

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
TAILQ_HEAD(pconn_list, pconn);

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
TAILQ_HEAD(pool_list, pg_pool);

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
    struct pg_server *next;
};

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
    struct pg_server *servers;
    struct pool_list pools; /* most recently used first */
    int npools;             /* not retired */
    struct event *sweep;    /* every second: idle timeouts, unused pools, gauges */
    struct event *tick;     /* every TICK_S */
    struct event *poll;     /* armed while a pool starves */
    char options[64];
};

/* What the pools of one server need, here and in the other workers. */
struct demand {
    struct pg_pool *local; /* this worker's starving pool waiting longest, or NULL */
    int nlocal;            /* this worker's starving pools */
    struct pg_budget_others others; /* `older`: theirs that waited longer than local's */
    int fair;              /* each busy pool's share of the budget; 0: they rotate */
    double oldest;         /* arrival of the node's oldest starving waiter; 0: none */
};

static void server_offer(struct pg_server *srv, struct pg_cluster *cl);

/* ---- lists ------------------------------------------------------------- */

static int pool_total(const struct pg_pool *p)
{
    return p->n[PC_CONNECTING] + p->n[PC_IDLE] + p->n[PC_ACTIVE];
}

/* Moves pc to the list of state `to` (PC_NONE: out of every list). Idle and
 * active lists are pushed at the head: idle is LIFO, and the oldest active
 * connection is the last. */
static void set_state(struct pconn *pc, int to)
{
    struct pg_pool *p = pc->pool;
    if (pc->state == PC_IDLE)
        TAILQ_REMOVE(&p->server->idle, pc, by_idle);
    if (pc->state == PC_CONNECTING)
        p->server->nconnecting--;
    if (pc->state != PC_NONE) {
        TAILQ_REMOVE(&p->conns[pc->state], pc, by_state);
        p->n[pc->state]--;
    }
    pc->state = to;
    if (to == PC_NONE)
        return;
    TAILQ_INSERT_HEAD(&p->conns[to], pc, by_state);
    p->n[to]++;
    if (to == PC_IDLE)
        TAILQ_INSERT_TAIL(&p->server->idle, pc, by_idle);
    if (to == PC_CONNECTING)
        p->server->nconnecting++;
}

/* Keeps p on its server's waiting list exactly while it has waiters. */
static void track_waiting(struct pg_pool *p)
{
    struct pg_server *srv = p->server;
    if (p->nwait > 0 && !p->on_waiting) {
        TAILQ_INSERT_TAIL(&srv->waiting, p, by_waiting);
        p->on_waiting = 1;
    } else if (p->nwait == 0 && p->on_waiting) {
        TAILQ_REMOVE(&srv->waiting, p, by_waiting);
        p->on_waiting = 0;
    }
}

/* Closes a connection. With keep_unit its budget unit stays with the caller,
 * who starts a connect on it next. */
static void close_pc(struct pconn *pc, enum close_reason why, int keep_unit)
{
    struct pg_server *srv = pc->pool->server;
    set_state(pc, PC_NONE);
    pg_conn_free(pc->conn);
    free(pc);
    if (!keep_unit)
        pg_budget_release(srv->slot);
    metrics_add(srv->m.closed[why], 1);
}

static double ewma(double avg, double sample)
{
    return avg > 0 ? avg + EWMA * (sample - avg) : sample;
}

static double connect_cost(const struct pg_server *srv)
{
    return srv->connect_cost > 0 ? srv->connect_cost : COST_DEFAULT_S;
}

/* A request asks p for a connection. */
static void note_ask(struct pg_pool *p, double now)
{
    if (p->last_acquire > 0)
        p->gap = ewma(p->gap, now - p->last_acquire);
    p->last_acquire = p->last_used = now;
}

static double linger_of(const struct pg_pool *p)
{
    return pg_policy_linger(p->gap, connect_cost(p->server));
}

/* How long a use of p's connections lasts: its average, or the server's
 * before p has one, and at least as long as its oldest use so far. */
static double hold_of(const struct pg_pool *p, double now)
{
    double h = p->hold > 0 ? p->hold : p->server->hold;
    const struct pconn *oldest = TAILQ_LAST(&p->conns[PC_ACTIVE], pconn_list);
    if (oldest && now - oldest->acquired_at > h)
        h = now - oldest->acquired_at;
    return h;
}

/* ---- waiters ----------------------------------------------------------- */

static void unlink_waiter(struct pg_waiter *w)
{
    struct pg_pool *p = w->pool;
    TAILQ_REMOVE(&p->waiters, w, link);
    p->nwait--;
    track_waiting(p);
    event_free(w->timer);
}

/* Ends a wait: the callback runs last, after w is freed. */
static void finish_waiter(struct pg_waiter *w, struct pg_conn *c, const char *err, double retry)
{
    pg_acquire_cb cb = w->cb;
    void *arg = w->arg;
    metrics_observe(&w->pool->server->m.wait, clock_mono() - w->since);
    unlink_waiter(w);
    free(w);
    cb(c, err, retry, arg);
}

static void fail_waiters(struct pg_pool *p, const char *err, double retry)
{
    while (!TAILQ_EMPTY(&p->waiters))
        finish_waiter(TAILQ_FIRST(&p->waiters), NULL, err, retry);
}

/* Hands idle connections to waiters, first come first served. */
static void serve_waiters(struct pg_pool *p)
{
    while (p->nwait > 0 && p->n[PC_IDLE] > 0) {
        struct pconn *pc = TAILQ_FIRST(&p->conns[PC_IDLE]);
        struct pg_waiter *w = TAILQ_FIRST(&p->waiters);
        set_state(pc, PC_ACTIVE);
        pc->acquired_at = pc->idle_since > w->since ? pc->idle_since : w->since;
        p->last_used = clock_mono();
        finish_waiter(w, pc->conn, NULL, 0);
    }
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_waiter *w = arg;
    struct pg_pool *p = w->pool;
    metrics_count("steeple_db_acquire_timeouts_total", p->server->m.label, 1);
    finish_waiter(w, NULL, "timed out waiting for a database connection", 1.0);
    server_offer(p->server, p->cl); /* p may starve no more */
}

/* ---- the breaker ------------------------------------------------------- */

/* Whether a connect may start now; else *retry_after is set. */
static int breaker_allows(struct pg_server *srv, const struct pg_settings *s, double *retry_after)
{
    if (srv->failures < s->breaker_failures)
        return 1;
    double now = clock_mono();
    if (now < srv->open_until) {
        *retry_after = srv->open_until - now;
        return 0;
    }
    if (srv->probing) { /* half open: one probe at a time */
        *retry_after = 1.0;
        return 0;
    }
    return 1;
}

/* Whether a connect may start now: the breaker allows it and fewer than
 * CONNECTING_MAX are in progress. */
static int may_connect(struct pg_server *srv, const struct pg_settings *s)
{
    double ignored;
    return srv->nconnecting < CONNECTING_MAX && breaker_allows(srv, s, &ignored);
}

static void breaker_result(struct pg_server *srv, const struct pg_settings *s, int ok,
                           const char *err)
{
    if (ok) {
        if (srv->failures >= s->breaker_failures)
            log_info("database server %s answers again; breaker closed", srv->name);
        srv->failures = 0;
        srv->probing = 0;
        return;
    }
    srv->failures++;
    srv->probing = 0;
    if (srv->failures >= s->breaker_failures) {
        srv->open_until = clock_mono() + s->breaker_open_s;
        log_warn("database server %s unavailable (%s); failing fast for %.0f s", srv->name, err,
                 s->breaker_open_s);
    }
}

/* ---- demand ------------------------------------------------------------ */

/* A pool with waiters and no connection, that may connect and whose last
 * waiter would still be there when a connect ends (room spent on a pool whose
 * waiters all time out first is room lost to the others). The cost counted
 * is at most half the acquire timeout, so a fresh waiter always qualifies. */
static int starving(const struct pg_pool *p, double now)
{
    if (p->nwait == 0 || pool_total(p) > 0 || p->retired || now < p->refused_until)
        return 0;
    double cost = connect_cost(p->server), half = p->cl->s.acquire_timeout_s / 2;
    return TAILQ_LAST(&p->waiters, waiter_list)->deadline > now + (cost < half ? cost : half);
}

static double head_since(const struct pg_pool *p)
{
    return TAILQ_FIRST(&p->waiters)->since;
}

static void read_demand(struct pg_server *srv, double now, struct demand *d)
{
    d->local = NULL;
    d->nlocal = 0;
    struct pg_pool *p;
    TAILQ_FOREACH(p, &srv->waiting, by_waiting) {
        if (!starving(p, now))
            continue;
        d->nlocal++;
        if (d->local == NULL || head_since(p) < head_since(d->local))
            d->local = p;
    }
    double since = d->local ? head_since(d->local) : now;
    pg_budget_others(srv->slot, since, &d->others);
    d->fair = pg_policy_fair_share(pg_budget_cap(srv->slot), srv->busy + d->others.busy);
    d->oldest = d->local ? since : 0;
    if (d->others.oldest > 0 && (d->oldest == 0 || d->others.oldest < d->oldest))
        d->oldest = d->others.oldest;
}

static void publish(struct pg_server *srv, const struct demand *d)
{
    struct pg_budget_demand mine = {srv->busy, d->nlocal, d->local ? head_since(d->local) : 0};
    pg_budget_publish(srv->slot, &mine);
}

static int budget_free(const struct pg_server *srv)
{
    return pg_budget_cap(srv->slot) - pg_budget_used(srv->slot);
}

/* ---- connecting -------------------------------------------------------- */

static void on_idle_broken(struct pg_conn *c, void *arg)
{
    struct pconn *pc = arg;
    struct pg_pool *p = pc->pool;
    close_pc(pc, CLOSE_ERROR, 0);
    server_offer(p->server, p->cl);
}

static void make_idle(struct pconn *pc, double now)
{
    pc->idle_since = now;
    set_state(pc, PC_IDLE);
    pg_conn_watch_idle(pc->conn, on_idle_broken, pc);
}

/* A refusal by a server that answered (no such database, bad password) says
 * nothing about the server's health: it does not count for the breaker. */
static int server_answered(const char *err)
{
    return err && strstr(err, "FATAL") &&
           (strstr(err, "does not exist") || strstr(err, "authentication") ||
            strstr(err, "permission denied") || strstr(err, "password"));
}

static void connect_failed(struct pconn *pc, const char *err)
{
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    const struct pg_settings *s = &p->cl->s;
    int answered = server_answered(err);
    if (answered) {
        srv->probing = 0;
        p->refused_until = clock_mono() + REFUSED_S;
    } else {
        breaker_result(srv, s, 0, err);
    }
    log_warn("cannot connect to %s/%s: %s", srv->name, p->dbname, err);
    close_pc(pc, CLOSE_ERROR, 0);
    if (pool_total(p) == 0)
        fail_waiters(p, "the database is unavailable",
                     srv->failures >= s->breaker_failures ? s->breaker_open_s : 1.0);
    server_offer(srv, p->cl); /* the unit is free again */
}

static int give_up(struct pconn *pc, double now);

static void on_connected(struct pg_conn *c, int ok, const char *err, void *arg)
{
    struct pconn *pc = arg;
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    if (!ok) {
        connect_failed(pc, err);
        return;
    }
    double now = clock_mono();
    breaker_result(srv, &p->cl->s, 1, NULL);
    srv->connect_cost = ewma(srv->connect_cost, now - pc->opened_at);
    if (p->nwait == 0 && give_up(pc, now))
        return; /* its waiters left meanwhile, and another pool starves */
    make_idle(pc, now);
    serve_waiters(p);
    server_offer(srv, p->cl); /* a connect may start in its place */
}

/* Starts a connect for p on a budget unit the caller holds; on failure the
 * unit is given back. Returns 0, or -1. */
static int start_connect(struct pg_pool *p, enum open_reason why)
{
    struct pg_server *srv = p->server;
    struct pconn *pc = calloc(1, sizeof *pc);
    if (pc != NULL) {
        pc->pool = p;
        pc->state = PC_NONE;
        pc->opened_at = clock_mono();
        srv->val[srv->dbname_slot] = p->dbname;
        pc->conn = pg_conn_start(p->cl->base, (const char *const *)srv->kw,
                                 (const char *const *)srv->val, p->cl->s.connect_timeout_s,
                                 on_connected, pc);
    }
    if (pc == NULL || pc->conn == NULL) {
        free(pc);
        pg_budget_release(srv->slot);
        return -1;
    }
    pg_conn_set_owner(pc->conn, pc);
    if (srv->failures >= p->cl->s.breaker_failures)
        srv->probing = 1;
    set_state(pc, PC_CONNECTING);
    metrics_add(srv->m.opened[why], 1);
    return 0;
}

/* ---- the policy -------------------------------------------------------- */

/* The least recently used idle connection of the server that may be closed
 * to make room for a starving pool, or NULL. */
static struct pconn *find_victim(struct pg_server *srv, int fair, double now)
{
    struct pconn *pc;
    TAILQ_FOREACH(pc, &srv->idle, by_idle) {
        struct pg_pool *p = pc->pool;
        struct pg_victim v = {p->last_used, pool_total(p), pc->idle_since, linger_of(p)};
        if (p->retired || pg_policy_may_evict(&v, fair, now))
            return pc;
    }
    return NULL;
}

/* Room for d->local, the starving pool waiting longest here: a free unit of
 * the budget (unless other workers' pools have waited longer and need the free
 * units first), else an idle connection that may be evicted. Starts its
 * connect; returns 1, or 0 when there is no room. */
static int room_for_starving(const struct demand *d, double now)
{
    struct pg_pool *q = d->local;
    struct pg_server *srv = q->server;
    if (budget_free(srv) > d->others.older && pg_budget_reserve(srv->slot))
        return start_connect(q, OPEN_FREE) == 0;
    struct pconn *victim = find_victim(srv, d->fair, now);
    if (victim == NULL)
        return 0;
    close_pc(victim, CLOSE_EVICT, 1);
    return start_connect(q, OPEN_EVICT) == 0;
}

/* One more connect for a pool that has connections, when its waiters need
 * it, into a free unit that no starving pool of the node needs. */
static void maybe_grow(struct pg_pool *p, const struct demand *d, double now)
{
    struct pg_server *srv = p->server;
    const struct pg_settings *s = &p->cl->s;
    if (p->retired || p->nwait == 0 || pool_total(p) == 0 || pool_total(p) >= s->pool_max ||
        now - p->gave_up_at < PG_HYSTERESIS_S)
        return;
    if (!pg_policy_should_grow(p->nwait, p->n[PC_IDLE], p->n[PC_CONNECTING], p->n[PC_ACTIVE],
                               hold_of(p, now), connect_cost(srv)))
        return;
    if (budget_free(srv) <= d->nlocal + d->others.starving || !pg_budget_reserve(srv->slot))
        return;
    if (start_connect(p, OPEN_FREE) != 0)
        log_warn("cannot start a connect to %s/%s: out of memory", srv->name, p->dbname);
}

static void arm_poll(struct pg_cluster *cl)
{
    if (evtimer_pending(cl->poll, NULL))
        return;
    struct timeval tv = {0, (suseconds_t)(POLL_S * 1e6)};
    evtimer_add(cl->poll, &tv);
}

/* Gives what room there is to the server's pools, starving ones first and
 * the longest waiting of them first, then publishes this worker's demand. */
static void server_offer(struct pg_server *srv, struct pg_cluster *cl)
{
    double now = clock_mono();
    struct demand d;
    read_demand(srv, now, &d);
    while (d.local && may_connect(srv, &cl->s) && room_for_starving(&d, now))
        read_demand(srv, now, &d);
    if (may_connect(srv, &cl->s)) {
        struct pg_pool *p;
        TAILQ_FOREACH(p, &srv->waiting, by_waiting)
            maybe_grow(p, &d, now);
    }
    publish(srv, &d);
    if (d.local)
        arm_poll(cl);
}

/* Whether a connection coming back (or just opened with nobody left to take
 * it) should make room for a starving pool. If so it is closed, and its unit
 * goes to the starving waiter that came first: to its pool at once when that
 * is here, else back to the node for the other worker. Returns 1 when pc was
 * closed. */
static int give_up(struct pconn *pc, double now)
{
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    if (budget_free(srv) > 0)
        return 0; /* starving pools take free units themselves */
    struct demand d;
    read_demand(srv, now, &d);
    if (d.others.starving == 0 && (d.local == NULL || !may_connect(srv, &p->cl->s)))
        return 0; /* nobody it could go to now */
    struct pg_return r = {pool_total(p), p->nwait, d.oldest, linger_of(p)};
    if (!pg_policy_give_up(&r, d.fair, p->cl->s.acquire_timeout_s / 4, now))
        return 0;
    p->gave_up_at = now;
    if (d.local && d.others.older == 0 && may_connect(srv, &p->cl->s)) {
        close_pc(pc, CLOSE_HANDOVER, 1);
        if (start_connect(d.local, OPEN_HANDOVER) != 0)
            log_warn("cannot start a connect to %s/%s: out of memory", srv->name, d.local->dbname);
    } else {
        close_pc(pc, CLOSE_SHED, 0);
    }
    server_offer(srv, p->cl);
    return 1;
}

/* Idle connections closed for other workers' starving pools, when this one
 * has none starving and the budget is spent. */
static void shed_for_others(struct pg_server *srv, double now)
{
    struct demand d;
    read_demand(srv, now, &d);
    if (d.local || budget_free(srv) > 0)
        return;
    for (int n = d.others.starving; n > 0; n--) {
        struct pconn *victim = find_victim(srv, d.fair, now);
        if (victim == NULL)
            return;
        close_pc(victim, CLOSE_SHED, 0);
    }
}

/* Waiters of p wait for its own connections unless they need another. */
static void pool_need(struct pg_pool *p)
{
    if (p->nwait == 0 || p->retired)
        return;
    struct pg_server *srv = p->server;
    if (pool_total(p) == 0) {
        server_offer(srv, p->cl); /* starving: served in order of arrival */
        return;
    }
    if (!may_connect(srv, &p->cl->s))
        return;
    double now = clock_mono();
    struct demand d;
    read_demand(srv, now, &d);
    maybe_grow(p, &d, now);
}

/* ---- pools ------------------------------------------------------------- */

/* Frees a retired pool with nothing left in it. Only the sweep calls this,
 * so a pool never disappears under a callback. */
static int pool_free_if_done(struct pg_pool *p)
{
    if (!p->retired || pool_total(p) > 0 || p->nwait > 0)
        return 0;
    TAILQ_REMOVE(&p->cl->pools, p, lru);
    event_free(p->kick);
    free(p);
    return 1;
}

static void retire(struct pg_pool *p)
{
    if (p->retired)
        return;
    p->retired = 1;
    p->cl->npools--;
    while (!TAILQ_EMPTY(&p->conns[PC_IDLE]))
        close_pc(TAILQ_FIRST(&p->conns[PC_IDLE]), CLOSE_RETIRED, 0);
    metrics_count("steeple_tenant_pool_evictions_total", "", 1);
    server_offer(p->server, p->cl);
}

/* Retires least recently used pools beyond the capacity (never one that
 * has waiters: they would only time out). */
static void enforce_capacity(struct pg_cluster *cl)
{
    while (cl->npools > cl->s.capacity) {
        struct pg_pool *victim = NULL, *q;
        TAILQ_FOREACH_REVERSE(q, &cl->pools, pool_list, lru) {
            if (!q->retired && q->nwait == 0) {
                victim = q;
                break;
            }
        }
        if (victim == NULL)
            return;
        retire(victim);
    }
}

/* The server whose key or alias is `key`, or NULL. */
static struct pg_server *find_server(const struct pg_cluster *cl, const char *key)
{
    for (struct pg_server *s = cl->servers; s; s = s->next)
        if (strcmp(s->key, key) == 0 || (s->alias[0] && strcmp(s->alias, key) == 0))
            return s;
    return NULL;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_pool *p = arg;
    serve_waiters(p);
    pool_need(p);
}

static struct pg_pool *pool_new(struct pg_cluster *cl, struct pg_server *srv, const char *dbname)
{
    struct pg_pool *p = calloc(1, sizeof *p);
    if (p == NULL || (p->kick = event_new(cl->base, -1, 0, on_kick, p)) == NULL) {
        free(p);
        return NULL;
    }
    p->cl = cl;
    p->server = srv;
    snprintf(p->dbname, sizeof p->dbname, "%s", dbname);
    for (int st = 0; st < PC_NSTATES; st++)
        TAILQ_INIT(&p->conns[st]);
    TAILQ_INIT(&p->waiters);
    p->last_used = clock_mono();
    return p;
}

struct pg_pool *pg_cluster_pool(struct pg_cluster *cl, const char *server, const char *dbname,
                                char *err, size_t errlen)
{
    struct pg_server *srv = find_server(cl, server);
    if (srv == NULL) {
        snprintf(err, errlen, "unknown database server '%s'", server);
        return NULL;
    }
    struct pg_pool *p;
    TAILQ_FOREACH(p, &cl->pools, lru) {
        if (!p->retired && p->server == srv && strcmp(p->dbname, dbname) == 0) {
            if (p != TAILQ_FIRST(&cl->pools)) {
                TAILQ_REMOVE(&cl->pools, p, lru);
                TAILQ_INSERT_HEAD(&cl->pools, p, lru);
            }
            p->last_used = clock_mono();
            return p;
        }
    }
    if (strlen(dbname) >= sizeof ((struct pg_pool *)0)->dbname) {
        snprintf(err, errlen, "database name too long");
        return NULL;
    }
    if ((p = pool_new(cl, srv, dbname)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    TAILQ_INSERT_HEAD(&cl->pools, p, lru);
    cl->npools++;
    enforce_capacity(cl);
    return p;
}

void pg_cluster_close_database(struct pg_cluster *cl, const char *server, const char *dbname)
{
    struct pg_server *srv = find_server(cl, server);
    struct pg_pool *p;
    TAILQ_FOREACH(p, &cl->pools, lru) {
        if (srv && !p->retired && p->server == srv && strcmp(p->dbname, dbname) == 0) {
            fail_waiters(p, "the database is being closed", 1.0);
            retire(p);
        }
    }
}

struct pg_conn *pg_pool_try_acquire(struct pg_pool *p)
{
    struct pconn *pc = TAILQ_FIRST(&p->conns[PC_IDLE]);
    double now = clock_mono();
    if (pc == NULL || p->nwait > 0)
        return NULL;
    note_ask(p, now);
    set_state(pc, PC_ACTIVE);
    pc->acquired_at = now;
    return pc->conn;
}

/* Whether a wait on p must fail at once (*retry_after and err set). */
static int refuse_wait(struct pg_pool *p, double now, double *retry_after, char *err,
                       size_t errlen)
{
    if (p->n[PC_IDLE] > 0 || p->n[PC_CONNECTING] > 0)
        return 0;
    if (!breaker_allows(p->server, &p->cl->s, retry_after)) {
        snprintf(err, errlen, "database server %s is unavailable", p->server->name);
        return 1;
    }
    if (p->n[PC_ACTIVE] == 0 && now < p->refused_until) {
        *retry_after = p->refused_until - now;
        snprintf(err, errlen, "the database is unavailable");
        return 1;
    }
    return 0;
}

static struct pg_waiter *waiter_new(struct pg_pool *p, double max_wait_s, pg_acquire_cb cb,
                                    void *arg, double now)
{
    struct pg_waiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->pool = p;
    w->cb = cb;
    w->arg = arg;
    w->since = now;
    w->timer = evtimer_new(p->cl->base, on_wait_timeout, w);
    double t = max_wait_s < p->cl->s.acquire_timeout_s ? max_wait_s : p->cl->s.acquire_timeout_s;
    if (t < 0)
        t = 0;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (time_t)t) * 1e6)};
    w->deadline = now + t;
    if (w->timer == NULL || evtimer_add(w->timer, &tv) != 0) {
        if (w->timer)
            event_free(w->timer);
        free(w);
        return NULL;
    }
    return w;
}

struct pg_waiter *pg_pool_wait(struct pg_pool *p, double max_wait_s, pg_acquire_cb cb, void *arg,
                               double *retry_after, char *err, size_t errlen)
{
    double now = clock_mono();
    *retry_after = 0;
    if (refuse_wait(p, now, retry_after, err, errlen))
        return NULL;
    struct pg_waiter *w = waiter_new(p, max_wait_s, cb, arg, now);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        *retry_after = 1.0;
        return NULL;
    }
    TAILQ_INSERT_TAIL(&p->waiters, w, link);
    p->nwait++;
    track_waiting(p);
    note_ask(p, now);
    if (p->n[PC_IDLE] > 0) { /* hand one over from the loop, never from here */
        struct timeval zero = {0, 0};
        event_add(p->kick, &zero);
        return w;
    }
    pool_need(p);
    return w;
}

void pg_waiter_cancel(struct pg_waiter *w)
{
    struct pg_pool *p = w->pool;
    unlink_waiter(w);
    free(w);
    if (p->nwait == 0 && pool_total(p) == 0) { /* it starved: say it does no more */
        struct demand d;
        read_demand(p->server, clock_mono(), &d);
        publish(p->server, &d);
    }
}

void pg_pool_release(struct pg_conn *c, int reusable)
{
    struct pconn *pc = pg_conn_owner(c);
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    double now = clock_mono();
    double held = now - pc->acquired_at;
    p->last_used = now;
    p->hold = ewma(p->hold, held);
    srv->hold = ewma(srv->hold, held);
    if (!reusable || p->retired || !pg_conn_usable(c)) {
        close_pc(pc, p->retired ? CLOSE_RETIRED : CLOSE_ERROR, 0);
        server_offer(srv, p->cl);
        return;
    }
    if (give_up(pc, now))
        return;
    make_idle(pc, now);
    if (p->nwait > 0)
        /* served from the loop: a release comes from a running request (or
         * a finalizer), and the waiter must not run inside it */
        event_active(p->kick, 0, 0);
}

/* ---- servers and the cluster ------------------------------------------- */

static void free_server(struct pg_server *s)
{
    if (s->kw) {
        for (int i = 0; s->kw[i]; i++) {
            free(s->kw[i]);
            if (i != s->dbname_slot)
                free(s->val[i]);
        }
    }
    free(s->kw);
    free(s->val);
    free(s);
}

static char *dup_or_null(const char *v)
{
    return v ? strdup(v) : NULL;
}

/* Copies the URL's non-empty options, leaving slots for dbname, options
 * (statement timeout) and application_name. */
static int parse_server(struct pg_server *s, const char *url, const char *options, char *err,
                        size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        snprintf(err, errlen, "bad database URL for %s: %s", s->name, perr ? perr : "out of memory");
        PQfreemem(perr);
        return -1;
    }
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    s->kw = calloc((size_t)n + 4, sizeof *s->kw);
    s->val = calloc((size_t)n + 4, sizeof *s->val);
    int k = 0, ok = s->kw && s->val;
    for (PQconninfoOption *o = opts; ok && o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0' || strcmp(o->keyword, "options") == 0 ||
            strcmp(o->keyword, "application_name") == 0)
            continue;
        if (strcmp(o->keyword, "dbname") == 0) {
            snprintf(s->dbname, sizeof s->dbname, "%s", o->val);
            continue;
        }
        s->kw[k] = strdup(o->keyword);
        s->val[k] = dup_or_null(o->val);
        ok = s->kw[k] && s->val[k];
        k++;
    }
    PQconninfoFree(opts);
    if (!ok)
        goto oom;
    s->dbname_slot = k;
    s->kw[k] = strdup("dbname");
    s->val[k++] = NULL; /* set per connect */
    s->kw[k] = strdup("options");
    s->val[k++] = strdup(options);
    s->kw[k] = strdup("application_name");
    s->val[k++] = strdup("steeple");
    if (!s->kw[k - 3] || !s->kw[k - 2] || !s->val[k - 2] || !s->kw[k - 1] || !s->val[k - 1])
        goto oom;
    if (s->dbname[0] == '\0')
        snprintf(s->dbname, sizeof s->dbname, "postgres");
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* Resolves the server's metric series once. */
static void server_metrics_init(struct pg_server *s)
{
    char esc[128], labels[METRICS_LABELS_LEN];
    metrics_escape_label(esc, sizeof esc, s->name);
    snprintf(s->m.label, sizeof s->m.label, "server=\"%s\"", esc);
    for (int r = 0; r < OPEN_NREASONS; r++) {
        snprintf(labels, sizeof labels, "%s,reason=\"%s\"", s->m.label, open_names[r]);
        s->m.opened[r] = metrics_series("steeple_db_connects_total", "", labels, METRIC_COUNTER);
    }
    for (int r = 0; r < CLOSE_NREASONS; r++) {
        snprintf(labels, sizeof labels, "%s,reason=\"%s\"", s->m.label, close_names[r]);
        s->m.closed[r] = metrics_series("steeple_db_closes_total", "", labels, METRIC_COUNTER);
    }
    (void)metrics_histogram_init(&s->m.wait, "steeple_db_wait_seconds", s->m.label);
}

/* Refuses names that another server has, or that do not fit. */
static int names_free(const struct pg_cluster *cl, const struct pg_server_names *id, char *err,
                      size_t errlen)
{
    const struct pg_server *probe = NULL;
    const char *name = id->name ? id->name : id->key;
    if (strlen(id->key) >= sizeof probe->key || strlen(name) >= sizeof probe->name ||
        (id->alias && strlen(id->alias) >= sizeof probe->alias)) {
        snprintf(err, errlen, "database server name too long: '%s'", name);
        return 0;
    }
    const char *taken = find_server(cl, id->key) ? id->key
                        : id->alias && find_server(cl, id->alias) ? id->alias
                                                                   : NULL;
    for (const struct pg_server *s = cl->servers; s && taken == NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            taken = name;
    if (taken)
        snprintf(err, errlen, "database server '%s' is configured twice", taken);
    return taken == NULL;
}

int pg_cluster_add_server(struct pg_cluster *cl, const struct pg_server_names *id,
                          const char *url, int cap, char *err, size_t errlen)
{
    if (!names_free(cl, id, err, errlen))
        return -1;
    struct pg_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *key = id->key;
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->alias, sizeof s->alias, "%s", id->alias ? id->alias : "");
    snprintf(s->name, sizeof s->name, "%s", id->name ? id->name : key);
    TAILQ_INIT(&s->waiting);
    TAILQ_INIT(&s->idle);
    if (parse_server(s, url, cl->options, err, errlen) != 0) {
        free_server(s);
        return -1;
    }
    if ((s->slot = pg_budget_server(key, cap > 0 ? cap : 1)) < 0) {
        snprintf(err, errlen, "no room for database server '%s' in the connection budget", s->name);
        free_server(s);
        return -1;
    }
    server_metrics_init(s);
    struct pg_server **tail = &cl->servers;
    while (*tail)
        tail = &(*tail)->next;
    *tail = s;
    return 0;
}

const char *pg_cluster_server_key(const struct pg_cluster *cl, const char *key)
{
    struct pg_server *s = find_server(cl, key);
    return s ? s->key : NULL;
}

const char *pg_cluster_server_dbname(const struct pg_cluster *cl, const char *key)
{
    struct pg_server *s = find_server(cl, key);
    return s ? s->dbname : NULL;
}

int pg_cluster_hold_tenants(struct pg_cluster *cl, const char *key)
{
    struct pg_server *s = find_server(cl, key);
    if (s == NULL)
        return -1;
    s->tenants = 1;
    return 0;
}

int pg_cluster_server_keys(const struct pg_cluster *cl, const char **keys, int max,
                           int tenants_only)
{
    int n = 0;
    for (struct pg_server *s = cl->servers; s && n < max; s = s->next)
        if (!tenants_only || s->tenants)
            keys[n++] = s->key;
    return n;
}

const struct pg_settings *pg_cluster_settings(const struct pg_cluster *cl) { return &cl->s; }
struct pg_cluster *pg_pool_cluster(const struct pg_pool *p) { return p->cl; }

/* Closes idle connections past the idle timeout, oldest first, stopping at
 * the first that is not (a pool keeps min_idle of them). */
static void close_idle(struct pg_server *srv, const struct pg_settings *s, double now)
{
    struct pconn *pc = TAILQ_FIRST(&srv->idle);
    while (pc && now - pc->idle_since > s->idle_timeout_s) {
        struct pconn *next = TAILQ_NEXT(pc, by_idle);
        if (pc->pool->n[PC_IDLE] > s->min_idle)
            close_pc(pc, CLOSE_IDLE, 0);
        pc = next;
    }
}

static void sweep(struct pg_cluster *cl)
{
    double now = clock_mono();
    for (struct pg_server *srv = cl->servers; srv; srv = srv->next)
        close_idle(srv, &cl->s, now);
    struct pg_pool *p = TAILQ_FIRST(&cl->pools);
    while (p) {
        struct pg_pool *next = TAILQ_NEXT(p, lru);
        if (!p->retired && p->nwait == 0 && pool_total(p) - p->n[PC_IDLE] == 0 &&
            now - p->last_used > cl->s.pool_idle_s)
            retire(p);
        pool_free_if_done(p);
        p = next;
    }
    for (struct pg_server *srv = cl->servers; srv; srv = srv->next)
        server_offer(srv, cl); /* idle connections closed: room */
}

void pg_cluster_report(struct pg_cluster *cl)
{
    static const char *const names[PC_NSTATES] = {"connecting", "idle", "active"};
    for (struct pg_server *s = cl->servers; s; s = s->next) {
        int counts[PC_NSTATES] = {0, 0, 0}, waiters = 0;
        struct pg_pool *p;
        TAILQ_FOREACH(p, &cl->pools, lru) {
            if (p->server != s)
                continue;
            for (int st = 0; st < PC_NSTATES; st++)
                counts[st] += p->n[st];
            waiters += p->nwait;
        }
        char labels[METRICS_LABELS_LEN];
        for (int st = 0; st < PC_NSTATES; st++) {
            snprintf(labels, sizeof labels, "%s,state=\"%s\"", s->m.label, names[st]);
            metrics_gauge("steeple_db_connections", labels, counts[st]);
        }
        metrics_gauge("steeple_db_waiters", s->m.label, waiters);
        metrics_gauge("steeple_circuit_open", s->m.label, clock_mono() < s->open_until);
    }
    metrics_gauge("steeple_tenant_pools", "", cl->npools);
}

void pg_cluster_declare_metrics(struct pg_cluster *cl)
{
    static const struct {
        const char *family, *help;
        enum metric_kind kind;
    } families[] = {
        {"steeple_db_connections", "Database connections of each server, by state.", METRIC_GAUGE},
        {"steeple_tenant_pools", "Tenant database pools open.", METRIC_GAUGE},
        {"steeple_tenant_pool_evictions_total",
         "Tenant database pools closed to stay within tenants.capacity or unused for tenants.idle_s.",
         METRIC_COUNTER},
        {"steeple_db_acquire_timeouts_total",
         "Requests that waited db.acquire_timeout_ms for a connection in vain, by server.",
         METRIC_COUNTER},
        {"steeple_circuit_open", "1 while a server's circuit breaker fails requests fast.",
         METRIC_GAUGE},
        {"steeple_db_connects_total",
         "Connections opened, by server and by where the room came from (free, evict, handover).",
         METRIC_COUNTER},
        {"steeple_db_closes_total", "Connections closed, by server and reason.", METRIC_COUNTER},
        {"steeple_db_waiters", "Requests waiting for a connection, by server.", METRIC_GAUGE},
        {"steeple_db_wait_seconds", "Time a request waited for a connection, by server.",
         METRIC_HISTOGRAM},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (metrics_describe(families[i].family, families[i].kind, families[i].help) != 0)
            log_warn("metrics table full: %s not declared", families[i].family);
    metrics_series("steeple_tenant_pool_evictions_total", "", "", METRIC_COUNTER);
    for (struct pg_server *s = cl->servers; s; s = s->next)
        metrics_series("steeple_db_acquire_timeouts_total", "", s->m.label, METRIC_COUNTER);
    pg_cluster_report(cl);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_cluster *cl = arg;
    sweep(cl);
    pg_cluster_report(cl);
}

/* Every TICK_S: recounts each server's busy pools, sheds idle connections
 * for the other workers, and offers room. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_cluster *cl = arg;
    double now = clock_mono();
    struct pg_server *srv;
    for (srv = cl->servers; srv; srv = srv->next)
        srv->busy = 0;
    struct pg_pool *p;
    TAILQ_FOREACH(p, &cl->pools, lru)
        if (!p->retired && (p->nwait > 0 || p->n[PC_ACTIVE] > 0 ||
                            now - p->last_used < PG_HYSTERESIS_S))
            p->server->busy++;
    for (srv = cl->servers; srv; srv = srv->next) {
        shed_for_others(srv, now);
        server_offer(srv, cl);
    }
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_cluster *cl = arg;
    for (struct pg_server *srv = cl->servers; srv; srv = srv->next)
        if (!TAILQ_EMPTY(&srv->waiting))
            server_offer(srv, cl);
}

static int add_timer(struct pg_cluster *cl, struct event **ev, short flags, double period,
                     event_callback_fn fn)
{
    *ev = event_new(cl->base, -1, flags, fn, cl);
    if (*ev == NULL)
        return -1;
    if (period <= 0)
        return 0;
    struct timeval tv = {(time_t)period, (suseconds_t)((period - (time_t)period) * 1e6)};
    return event_add(*ev, &tv);
}

struct pg_cluster *pg_cluster_new(struct event_base *base, const struct pg_settings *s)
{
    struct pg_cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return NULL;
    cl->base = base;
    cl->s = *s;
    TAILQ_INIT(&cl->pools);
    snprintf(cl->options, sizeof cl->options, "-c statement_timeout=%lld",
             (long long)(s->statement_timeout_s * 1000));
    if (add_timer(cl, &cl->sweep, EV_PERSIST, 1.0, on_sweep) != 0 ||
        add_timer(cl, &cl->tick, EV_PERSIST, TICK_S, on_tick) != 0 ||
        add_timer(cl, &cl->poll, 0, 0, on_poll) != 0) {
        pg_cluster_free(cl);
        return NULL;
    }
    return cl;
}

void pg_cluster_free(struct pg_cluster *cl)
{
    if (cl == NULL)
        return;
    while (!TAILQ_EMPTY(&cl->pools)) {
        struct pg_pool *p = TAILQ_FIRST(&cl->pools);
        fail_waiters(p, "shutting down", 1.0);
        for (int st = 0; st < PC_NSTATES; st++)
            while (!TAILQ_EMPTY(&p->conns[st]))
                close_pc(TAILQ_FIRST(&p->conns[st]), CLOSE_RETIRED, 0);
        TAILQ_REMOVE(&cl->pools, p, lru);
        event_free(p->kick);
        free(p);
    }
    while (cl->servers) {
        struct pg_server *s = cl->servers;
        cl->servers = s->next;
        free_server(s);
    }
    struct event *evs[] = {cl->sweep, cl->tick, cl->poll};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    free(cl);
}
