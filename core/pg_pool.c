/* pg_pool.c — a pool of connections to one (server, database): its
 * connections by state, its waiters (first come, first served, each with a
 * deadline), connecting, acquire and release (see pg_pool.h, and
 * pg_pool_internal.h for how the files of the pools divide the work). */
#include "pg_pool_internal.h"
#include "clock.h"
#include "log.h"
#include "pg_budget.h"
#include "pg_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REFUSED_S 1.0     /* a database the server refused fails fast this long */
#define EWMA 0.2          /* weight of a new sample in moving averages */

/* ---- lists ------------------------------------------------------------ */

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

void pconn_close(struct pconn *pc, enum close_reason why, int keep_unit)
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

/* A request asks p for a connection. */
static void note_ask(struct pg_pool *p, double now)
{
    if (p->last_acquire > 0)
        p->gap = ewma(p->gap, now - p->last_acquire);
    p->last_acquire = p->last_used = now;
}

/* ---- waiters ---------------------------------------------------------- */

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

void pool_fail_waiters(struct pg_pool *p, const char *err, double retry)
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

/* ---- connecting ------------------------------------------------------- */

static void on_idle_broken(struct pg_conn *c, void *arg)
{
    struct pconn *pc = arg;
    struct pg_pool *p = pc->pool;
    pconn_close(pc, CLOSE_ERROR, 0);
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
        server_breaker_result(srv, s, 0, err);
    }
    log_warn("cannot connect to %s/%s: %s", srv->name, p->dbname, err);
    pconn_close(pc, CLOSE_ERROR, 0);
    if (pool_total(p) == 0)
        pool_fail_waiters(p, "the database is unavailable",
                     srv->failures >= s->breaker_failures ? s->breaker_open_s : 1.0);
    server_offer(srv, p->cl); /* the unit is free again */
}

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
    server_breaker_result(srv, &p->cl->s, 1, NULL);
    srv->connect_cost = ewma(srv->connect_cost, now - pc->opened_at);
    if (p->nwait == 0 && pool_give_up(pc, now))
        return; /* its waiters left meanwhile, and another pool starves */
    make_idle(pc, now);
    serve_waiters(p);
    server_offer(srv, p->cl); /* a connect may start in its place */
}

int pool_connect(struct pg_pool *p, enum open_reason why)
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
        if (pc->conn != NULL && p->cl->s.prepared_max > 0 &&
            pg_conn_prepare_statements(pc->conn, p->cl->s.prepared_max) != 0) {
            pg_conn_free(pc->conn); /* its callback is never called */
            pc->conn = NULL;
        }
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

/* ---- the pool --------------------------------------------------------- */

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_pool *p = arg;
    serve_waiters(p);
    pool_need(p);
}

struct pg_pool *pool_new(struct pg_cluster *cl, struct pg_server *srv, const char *dbname)
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

void pool_free(struct pg_pool *p)
{
    event_free(p->kick);
    free(p);
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
    if (!server_breaker_allows(p->server, &p->cl->s, retry_after)) {
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
        server_publish(p->server, clock_mono());
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
        pconn_close(pc, p->retired ? CLOSE_RETIRED : CLOSE_ERROR, 0);
        server_offer(srv, p->cl);
        return;
    }
    if (pool_give_up(pc, now))
        return;
    make_idle(pc, now);
    if (p->nwait > 0)
        /* served from the loop: a release comes from a running request (or
         * a finalizer), and the waiter must not run inside it */
        event_active(p->kick, 0, 0);
}
