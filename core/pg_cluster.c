/* pg_cluster.c — the database servers and pools of one worker. Servers are
 * kept in the order added and found by key or alias. Pools are kept in LRU
 * order up to `capacity`: the least recently used beyond it, or one unused
 * for `pool_idle_s`, is retired (its connections close as they come back)
 * and freed by the sweep once empty. Also the cluster's timers (sweep, tick,
 * poll), its gauges, and its creation and shutdown. */
#include "pg_pool_internal.h"
#include "clock.h"
#include "log.h"
#include "pg_budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- servers ---------------------------------------------------------- */

/* The server whose key or alias is `key`, or NULL. */
static struct pg_server *server_find(const struct pg_cluster *cl, const char *key)
{
    struct pg_server *s;
    TAILQ_FOREACH(s, &cl->servers, link)
        if (strcmp(s->key, key) == 0 || (s->alias[0] && strcmp(s->alias, key) == 0))
            return s;
    return NULL;
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
    const char *taken = server_find(cl, id->key) ? id->key
                        : id->alias && server_find(cl, id->alias) ? id->alias
                                                                   : NULL;
    const struct pg_server *s;
    TAILQ_FOREACH(s, &cl->servers, link)
        if (taken == NULL && strcmp(s->name, name) == 0)
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
    struct pg_server *s = server_new(id->key, id->alias, id->name, url, cl->options, cap, err,
                                     errlen);
    if (s == NULL)
        return -1;
    TAILQ_INSERT_TAIL(&cl->servers, s, link);
    return 0;
}

const char *pg_cluster_server_key(const struct pg_cluster *cl, const char *key)
{
    struct pg_server *s = server_find(cl, key);
    return s ? s->key : NULL;
}

const char *pg_cluster_server_dbname(const struct pg_cluster *cl, const char *key)
{
    struct pg_server *s = server_find(cl, key);
    return s ? s->dbname : NULL;
}

int pg_cluster_hold_tenants(struct pg_cluster *cl, const char *key)
{
    struct pg_server *s = server_find(cl, key);
    if (s == NULL)
        return -1;
    s->tenants = 1;
    return 0;
}

int pg_cluster_server_keys(const struct pg_cluster *cl, const char **keys, int max,
                           int tenants_only)
{
    int n = 0;
    const struct pg_server *s;
    TAILQ_FOREACH(s, &cl->servers, link)
        if (n < max && (!tenants_only || s->tenants))
            keys[n++] = s->key;
    return n;
}

/* ---- pools, least recently used first --------------------------------- */

/* Frees a retired pool with nothing left in it. Only the sweep calls this,
 * so a pool never disappears under a callback. */
static int pool_free_if_done(struct pg_pool *p)
{
    if (!p->retired || pool_total(p) > 0 || p->nwait > 0)
        return 0;
    TAILQ_REMOVE(&p->cl->pools, p, lru);
    pool_free(p);
    return 1;
}

static void retire(struct pg_pool *p)
{
    if (p->retired)
        return;
    p->retired = 1;
    p->cl->npools--;
    while (!TAILQ_EMPTY(&p->conns[PC_IDLE]))
        pconn_close(TAILQ_FIRST(&p->conns[PC_IDLE]), CLOSE_RETIRED, 0);
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

struct pg_pool *pg_cluster_pool(struct pg_cluster *cl, const char *server, const char *dbname,
                                char *err, size_t errlen)
{
    struct pg_server *srv = server_find(cl, server);
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
    struct pg_server *srv = server_find(cl, server);
    struct pg_pool *p;
    TAILQ_FOREACH(p, &cl->pools, lru) {
        if (srv && !p->retired && p->server == srv && strcmp(p->dbname, dbname) == 0) {
            pool_fail_waiters(p, "the database is being closed", 1.0);
            retire(p);
        }
    }
}

const struct pg_settings *pg_cluster_settings(const struct pg_cluster *cl) { return &cl->s; }

struct pg_cluster *pg_pool_cluster(const struct pg_pool *p) { return p->cl; }

/* ---- timers ----------------------------------------------------------- */

/* Closes idle connections past the idle timeout, oldest first, stopping at
 * the first that is not (a pool keeps min_idle of them). */
static void close_idle(struct pg_server *srv, const struct pg_settings *s, double now)
{
    struct pconn *pc = TAILQ_FIRST(&srv->idle);
    while (pc && now - pc->idle_since > s->idle_timeout_s) {
        struct pconn *next = TAILQ_NEXT(pc, by_idle);
        if (pc->pool->n[PC_IDLE] > s->min_idle)
            pconn_close(pc, CLOSE_IDLE, 0);
        pc = next;
    }
}

static void sweep(struct pg_cluster *cl)
{
    double now = clock_mono();
    struct pg_server *srv;
    TAILQ_FOREACH(srv, &cl->servers, link)
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
    TAILQ_FOREACH(srv, &cl->servers, link)
        server_offer(srv, cl); /* idle connections closed: room */
}

/* ---- gauges ----------------------------------------------------------- */

void pg_cluster_report(struct pg_cluster *cl)
{
    static const char *const names[PC_NSTATES] = {"connecting", "idle", "active"};
    struct pg_server *s;
    TAILQ_FOREACH(s, &cl->servers, link) {
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
    struct pg_server *s;
    TAILQ_FOREACH(s, &cl->servers, link)
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
    TAILQ_FOREACH(srv, &cl->servers, link)
        srv->busy = 0;
    struct pg_pool *p;
    TAILQ_FOREACH(p, &cl->pools, lru)
        if (!p->retired && (p->nwait > 0 || p->n[PC_ACTIVE] > 0 ||
                            now - p->last_used < PG_HYSTERESIS_S))
            p->server->busy++;
    TAILQ_FOREACH(srv, &cl->servers, link) {
        server_shed(srv, now);
        server_offer(srv, cl);
    }
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_cluster *cl = arg;
    struct pg_server *srv;
    TAILQ_FOREACH(srv, &cl->servers, link)
        if (!TAILQ_EMPTY(&srv->waiting))
            server_offer(srv, cl);
}

/* ---- the cluster ------------------------------------------------------ */

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
    TAILQ_INIT(&cl->servers);
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
        pool_fail_waiters(p, "shutting down", 1.0);
        for (int st = 0; st < PC_NSTATES; st++)
            while (!TAILQ_EMPTY(&p->conns[st]))
                pconn_close(TAILQ_FIRST(&p->conns[st]), CLOSE_RETIRED, 0);
        TAILQ_REMOVE(&cl->pools, p, lru);
        pool_free(p);
    }
    while (!TAILQ_EMPTY(&cl->servers)) {
        struct pg_server *s = TAILQ_FIRST(&cl->servers);
        TAILQ_REMOVE(&cl->servers, s, link);
        server_free(s);
    }
    struct event *evs[] = {cl->sweep, cl->tick, cl->poll};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    free(cl);
}
