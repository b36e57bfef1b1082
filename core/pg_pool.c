/* pg_pool.c — bounded pools per (server, database) with waiters, a server
 * cap, a circuit breaker and an LRU of pools (see pg_pool.h). */
#include "pg_pool.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "pg_conn.h"

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pc_state { PC_CONNECTING, PC_IDLE, PC_ACTIVE, PC_NONE };

struct pconn {
    struct pg_conn *conn;
    struct pg_pool *pool;
    enum pc_state state;
    double idle_since;
    struct pconn *prev, *next;
};

struct pc_list {
    struct pconn *head;
    int n;
};

struct pg_waiter {
    struct pg_pool *pool;
    pg_acquire_cb cb;
    void *arg;
    struct event *timer;
    struct pg_waiter *prev, *next;
};

struct pg_server {
    char key[96];    /* what the registry records and db.pool() takes */
    char alias[96];  /* "" or a second key that finds it (see pg_server_names) */
    char name[64];   /* its name in metrics and logs */
    char dbname[64]; /* the database of the URL */
    char **kw, **val; /* libpq keywords with slots for dbname and options */
    int dbname_slot;
    int cap;
    int nconns; /* connecting, idle or active, over all pools */
    int failures;
    double open_until;
    int probing;
    int tenants; /* holds tenant databases */
    struct pg_server *next;
};

struct pg_pool {
    struct pg_cluster *cl;
    struct pg_server *server;
    char dbname[64];
    struct pc_list lists[3]; /* by enum pc_state */
    struct pg_waiter *wait_head, *wait_tail;
    int nwait;
    int retired;
    double last_used;
    struct event *kick; /* serves waiters from the loop when idle connections wait */
    struct pg_pool *prev, *next; /* the cluster's list: LRU order, retired at the end */
};

struct pg_cluster {
    struct event_base *base;
    struct pg_settings s;
    struct pg_server *servers;
    struct pg_pool *pools; /* most recently used first */
    int npools;            /* not retired */
    struct event *sweep;
    char options[64];
};

static void server_kick(struct pg_server *srv, struct pg_cluster *cl);

/* ---- lists ------------------------------------------------------------- */

static void set_state(struct pconn *pc, enum pc_state to)
{
    struct pg_pool *p = pc->pool;
    if (pc->state != PC_NONE) {
        struct pc_list *l = &p->lists[pc->state];
        if (pc->prev)
            pc->prev->next = pc->next;
        else
            l->head = pc->next;
        if (pc->next)
            pc->next->prev = pc->prev;
        l->n--;
    }
    pc->prev = pc->next = NULL;
    pc->state = to;
    if (to != PC_NONE) { /* push at the head: LIFO for idle */
        struct pc_list *l = &p->lists[to];
        pc->next = l->head;
        if (l->head)
            l->head->prev = pc;
        l->head = pc;
        l->n++;
    }
}

static int pool_total(const struct pg_pool *p)
{
    return p->lists[PC_CONNECTING].n + p->lists[PC_IDLE].n + p->lists[PC_ACTIVE].n;
}

static void close_pc(struct pconn *pc)
{
    struct pg_pool *p = pc->pool;
    set_state(pc, PC_NONE);
    pg_conn_free(pc->conn);
    p->server->nconns--;
    free(pc);
}

/* ---- waiters ----------------------------------------------------------- */

static void unlink_waiter(struct pg_waiter *w)
{
    struct pg_pool *p = w->pool;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    p->nwait--;
}

static void finish_waiter(struct pg_waiter *w, struct pg_conn *c, const char *err, double retry)
{
    pg_acquire_cb cb = w->cb;
    void *arg = w->arg;
    unlink_waiter(w);
    event_free(w->timer);
    free(w);
    cb(c, err, retry, arg);
}

static void fail_waiters(struct pg_pool *p, const char *err, double retry)
{
    while (p->wait_head)
        finish_waiter(p->wait_head, NULL, err, retry);
}

/* Hands idle connections to waiters, first come first served. */
static void serve_waiters(struct pg_pool *p)
{
    while (p->wait_head && p->lists[PC_IDLE].head) {
        struct pconn *pc = p->lists[PC_IDLE].head;
        set_state(pc, PC_ACTIVE);
        p->last_used = clock_mono();
        finish_waiter(p->wait_head, pc->conn, NULL, 0);
    }
}

/* The label text server="<name>"[,state="<state>"] of a server's series. */
static void server_labels(char *out, size_t cap, const struct pg_server *s, const char *state)
{
    char esc[sizeof s->name * 2];
    metrics_escape_label(esc, sizeof esc, s->name);
    if (state)
        snprintf(out, cap, "server=\"%s\",state=\"%s\"", esc, state);
    else
        snprintf(out, cap, "server=\"%s\"", esc);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pg_waiter *w = arg;
    char labels[METRICS_LABELS_LEN];
    server_labels(labels, sizeof labels, w->pool->server, NULL);
    metrics_count("steeple_db_acquire_timeouts_total", labels, 1);
    finish_waiter(w, NULL, "timed out waiting for a database connection", 1.0);
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

/* ---- connecting -------------------------------------------------------- */

static void on_idle_broken(struct pg_conn *c, void *arg)
{
    struct pconn *pc = arg;
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    close_pc(pc);
    server_kick(srv, p->cl);
}

static void make_idle(struct pconn *pc)
{
    set_state(pc, PC_IDLE);
    pc->idle_since = clock_mono();
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

static void on_connected(struct pg_conn *c, int ok, const char *err, void *arg)
{
    struct pconn *pc = arg;
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    if (ok || !server_answered(err))
        breaker_result(srv, &p->cl->s, ok, err);
    else
        srv->probing = 0;
    if (!ok) {
        log_warn("cannot connect to %s/%s: %s", srv->name, p->dbname, err);
        close_pc(pc);
        if (p->lists[PC_CONNECTING].n == 0) {
            double retry = srv->failures >= p->cl->s.breaker_failures ? p->cl->s.breaker_open_s : 1.0;
            fail_waiters(p, "the database is unavailable", retry);
        }
        return;
    }
    make_idle(pc);
    serve_waiters(p);
    server_kick(srv, p->cl); /* other pools may wait for room */
}

static int start_connect(struct pg_pool *p)
{
    struct pg_server *srv = p->server;
    struct pconn *pc = calloc(1, sizeof *pc);
    if (pc == NULL)
        return -1;
    pc->pool = p;
    pc->state = PC_NONE;
    srv->val[srv->dbname_slot] = p->dbname;
    pc->conn = pg_conn_start(p->cl->base, (const char *const *)srv->kw,
                             (const char *const *)srv->val, p->cl->s.connect_timeout_s,
                             on_connected, pc);
    if (pc->conn == NULL) {
        free(pc);
        return -1;
    }
    pg_conn_set_owner(pc->conn, pc);
    srv->nconns++;
    if (srv->failures >= p->cl->s.breaker_failures)
        srv->probing = 1;
    set_state(pc, PC_CONNECTING);
    return 0;
}

/* Closes one idle connection of another pool on the server (least recently
 * used pool first) to make room. Returns 1 if it did. */
static int steal_idle(struct pg_cluster *cl, struct pg_server *srv, struct pg_pool *for_pool)
{
    struct pg_pool *last = NULL;
    for (struct pg_pool *q = cl->pools; q; q = q->next)
        if (q != for_pool && q->server == srv && q->lists[PC_IDLE].n > 0)
            last = q;
    if (last == NULL)
        return 0;
    struct pconn *pc = last->lists[PC_IDLE].head;
    while (pc->next) /* the longest idle one */
        pc = pc->next;
    close_pc(pc);
    return 1;
}

/* Starts the connects a pool's waiters need, within the pool and server caps. */
static void grow(struct pg_pool *p)
{
    struct pg_cluster *cl = p->cl;
    struct pg_server *srv = p->server;
    while (p->nwait > p->lists[PC_CONNECTING].n && pool_total(p) < cl->s.pool_max) {
        double retry = 0;
        if (!breaker_allows(srv, &cl->s, &retry))
            return;
        if (srv->nconns >= srv->cap && !steal_idle(cl, srv, p))
            return; /* waits for a connection of the server to come back */
        if (start_connect(p) != 0)
            return;
    }
}

static void server_kick(struct pg_server *srv, struct pg_cluster *cl)
{
    for (struct pg_pool *q = cl->pools; q; q = q->next)
        if (q->server == srv && q->nwait > 0 && !q->retired)
            grow(q);
}

/* ---- pools ------------------------------------------------------------- */

static void lru_unlink(struct pg_cluster *cl, struct pg_pool *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        cl->pools = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

static void lru_push_front(struct pg_cluster *cl, struct pg_pool *p)
{
    p->next = cl->pools;
    if (cl->pools)
        cl->pools->prev = p;
    cl->pools = p;
}


/* Frees a retired pool with nothing left in it. Only the sweep calls this,
 * so a pool never disappears under a callback. */
static int pool_free_if_done(struct pg_pool *p)
{
    if (!p->retired || pool_total(p) > 0 || p->nwait > 0)
        return 0;
    lru_unlink(p->cl, p);
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
    while (p->lists[PC_IDLE].head)
        close_pc(p->lists[PC_IDLE].head);
    metrics_count("steeple_tenant_pool_evictions_total", "", 1);
    server_kick(p->server, p->cl);
}

/* Retires least recently used pools beyond the capacity (never one that
 * has waiters: they would only time out). */
static void enforce_capacity(struct pg_cluster *cl)
{
    while (cl->npools > cl->s.capacity) {
        struct pg_pool *victim = NULL;
        for (struct pg_pool *q = cl->pools; q; q = q->next)
            if (!q->retired && q->nwait == 0)
                victim = q;
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
    grow(p);
}

struct pg_pool *pg_cluster_pool(struct pg_cluster *cl, const char *server, const char *dbname,
                                char *err, size_t errlen)
{
    struct pg_server *srv = find_server(cl, server);
    if (srv == NULL) {
        snprintf(err, errlen, "unknown database server '%s'", server);
        return NULL;
    }
    for (struct pg_pool *p = cl->pools; p; p = p->next) {
        if (!p->retired && p->server == srv && strcmp(p->dbname, dbname) == 0) {
            if (p != cl->pools) {
                lru_unlink(cl, p);
                lru_push_front(cl, p);
            }
            p->last_used = clock_mono();
            return p;
        }
    }
    if (strlen(dbname) >= sizeof ((struct pg_pool *)0)->dbname) {
        snprintf(err, errlen, "database name too long");
        return NULL;
    }
    struct pg_pool *p = calloc(1, sizeof *p);
    if (p == NULL || (p->kick = event_new(cl->base, -1, 0, on_kick, p)) == NULL) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cl = cl;
    p->server = srv;
    snprintf(p->dbname, sizeof p->dbname, "%s", dbname);
    p->last_used = clock_mono();
    lru_push_front(cl, p);
    cl->npools++;
    enforce_capacity(cl);
    return p;
}

void pg_cluster_close_database(struct pg_cluster *cl, const char *server, const char *dbname)
{
    struct pg_server *srv = find_server(cl, server);
    for (struct pg_pool *p = cl->pools, *next; p && srv; p = next) {
        next = p->next;
        if (!p->retired && p->server == srv && strcmp(p->dbname, dbname) == 0) {
            fail_waiters(p, "the database is being closed", 1.0);
            retire(p);
        }
    }
}

struct pg_conn *pg_pool_try_acquire(struct pg_pool *p)
{
    struct pconn *pc = p->lists[PC_IDLE].head;
    if (pc == NULL || p->nwait > 0)
        return NULL;
    set_state(pc, PC_ACTIVE);
    p->last_used = clock_mono();
    return pc->conn;
}

struct pg_waiter *pg_pool_wait(struct pg_pool *p, double max_wait_s, pg_acquire_cb cb, void *arg,
                               double *retry_after, char *err, size_t errlen)
{
    struct pg_cluster *cl = p->cl;
    *retry_after = 0;
    if (p->lists[PC_IDLE].n == 0 && p->lists[PC_CONNECTING].n == 0 &&
        !breaker_allows(p->server, &cl->s, retry_after)) {
        snprintf(err, errlen, "database server %s is unavailable", p->server->name);
        return NULL;
    }
    struct pg_waiter *w = calloc(1, sizeof *w);
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        *retry_after = 1.0;
        return NULL;
    }
    w->pool = p;
    w->cb = cb;
    w->arg = arg;
    w->timer = evtimer_new(cl->base, on_wait_timeout, w);
    double t = max_wait_s < cl->s.acquire_timeout_s ? max_wait_s : cl->s.acquire_timeout_s;
    if (t < 0)
        t = 0;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (time_t)t) * 1e6)};
    if (w->timer == NULL || evtimer_add(w->timer, &tv) != 0) {
        if (w->timer)
            event_free(w->timer);
        free(w);
        snprintf(err, errlen, "out of memory");
        *retry_after = 1.0;
        return NULL;
    }
    w->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->nwait++;
    p->last_used = clock_mono();
    if (p->lists[PC_IDLE].n > 0) { /* hand one over from the loop, never from here */
        struct timeval now = {0, 0};
        event_add(p->kick, &now);
    }
    grow(p);
    return w;
}

void pg_waiter_cancel(struct pg_waiter *w)
{
    unlink_waiter(w);
    event_free(w->timer);
    free(w);
}

void pg_pool_release(struct pg_conn *c, int reusable)
{
    struct pconn *pc = pg_conn_owner(c);
    struct pg_pool *p = pc->pool;
    struct pg_server *srv = p->server;
    p->last_used = clock_mono();
    if (!reusable || p->retired || !pg_conn_usable(c)) {
        close_pc(pc);
        server_kick(srv, p->cl);
        grow(p);
        return;
    }
    make_idle(pc);
    if (p->nwait > 0) {
        /* served from the loop: a release comes from a running request (or
         * a finalizer), and the waiter must not run inside it */
        event_active(p->kick, 0, 0);
        return;
    }
    if (p->lists[PC_IDLE].head && srv->nconns >= srv->cap) {
        /* another pool of the server may be starved: give it the room */
        for (struct pg_pool *q = p->cl->pools; q; q = q->next)
            if (q != p && q->server == srv && q->nwait > q->lists[PC_CONNECTING].n) {
                close_pc(p->lists[PC_IDLE].head);
                grow(q);
                break;
            }
    }
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

/* Refuses names that another server has, or that do not fit. */
static int names_free(const struct pg_cluster *cl, const struct pg_server_names *id, char *err,
                      size_t errlen)
{
    const char *name = id->name ? id->name : id->key;
    if (strlen(id->key) >= sizeof cl->servers->key || strlen(name) >= sizeof cl->servers->name ||
        (id->alias && strlen(id->alias) >= sizeof cl->servers->alias)) {
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
    snprintf(s->key, sizeof s->key, "%s", id->key);
    snprintf(s->alias, sizeof s->alias, "%s", id->alias ? id->alias : "");
    snprintf(s->name, sizeof s->name, "%s", id->name ? id->name : id->key);
    s->cap = cap > 0 ? cap : 1;
    if (parse_server(s, url, cl->options, err, errlen) != 0) {
        free_server(s);
        return -1;
    }
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

static void sweep(struct pg_cluster *cl)
{
    double now = clock_mono();
    for (struct pg_pool *p = cl->pools, *next; p; p = next) {
        next = p->next;
        int keep = cl->s.min_idle;
        struct pconn *pc = p->lists[PC_IDLE].head;
        for (int i = 0; pc; i++) { /* newest first: close the old tail */
            struct pconn *after = pc->next;
            if (i >= keep && now - pc->idle_since > cl->s.idle_timeout_s)
                close_pc(pc);
            pc = after;
        }
        if (!p->retired && p->nwait == 0 && p->lists[PC_ACTIVE].n == 0 &&
            p->lists[PC_CONNECTING].n == 0 && now - p->last_used > cl->s.pool_idle_s)
            retire(p);
        pool_free_if_done(p);
    }
}

void pg_cluster_report(struct pg_cluster *cl)
{
    static const char *const states[] = {"connecting", "idle", "active"};
    char labels[METRICS_LABELS_LEN];
    for (struct pg_server *s = cl->servers; s; s = s->next) {
        int counts[3] = {0, 0, 0};
        for (struct pg_pool *p = cl->pools; p; p = p->next)
            if (p->server == s)
                for (int st = 0; st < 3; st++)
                    counts[st] += p->lists[st].n;
        for (int st = 0; st < 3; st++) {
            server_labels(labels, sizeof labels, s, states[st]);
            metrics_gauge("steeple_db_connections", labels, counts[st]);
        }
        server_labels(labels, sizeof labels, s, NULL);
        metrics_gauge("steeple_circuit_open", labels, clock_mono() < s->open_until);
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
    };
    char labels[METRICS_LABELS_LEN];
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (metrics_describe(families[i].family, families[i].kind, families[i].help) != 0)
            log_warn("metrics table full: %s not declared", families[i].family);
    metrics_series("steeple_tenant_pool_evictions_total", "", "", METRIC_COUNTER);
    for (struct pg_server *s = cl->servers; s; s = s->next) {
        server_labels(labels, sizeof labels, s, NULL);
        metrics_series("steeple_db_acquire_timeouts_total", "", labels, METRIC_COUNTER);
    }
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

struct pg_cluster *pg_cluster_new(struct event_base *base, const struct pg_settings *s)
{
    struct pg_cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return NULL;
    cl->base = base;
    cl->s = *s;
    snprintf(cl->options, sizeof cl->options, "-c statement_timeout=%lld",
             (long long)(s->statement_timeout_s * 1000));
    cl->sweep = event_new(base, -1, EV_PERSIST, on_sweep, cl);
    struct timeval tv = {1, 0};
    if (cl->sweep == NULL || event_add(cl->sweep, &tv) != 0) {
        if (cl->sweep)
            event_free(cl->sweep);
        free(cl);
        return NULL;
    }
    return cl;
}

void pg_cluster_free(struct pg_cluster *cl)
{
    if (cl == NULL)
        return;
    while (cl->pools) {
        struct pg_pool *p = cl->pools;
        fail_waiters(p, "shutting down", 1.0);
        for (int st = 0; st < 3; st++)
            while (p->lists[st].head)
                close_pc(p->lists[st].head);
        lru_unlink(cl, p);
        event_free(p->kick);
        free(p);
    }
    while (cl->servers) {
        struct pg_server *s = cl->servers;
        cl->servers = s->next;
        free_server(s);
    }
    event_free(cl->sweep);
    free(cl);
}
