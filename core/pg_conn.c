/* pg_conn.c — non-blocking libpq on libevent (see pg_conn.h). */
#include "pg_conn.h"
#include "pg_stmt_cache.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum state { CONNECTING, IDLE, SENDING, READING, LENT, BROKEN };

/* What the statement in flight sends: itself unnamed (or a script), its
 * Parse under a new name (then PREPARED follows), or its cached name. */
enum step { PLAIN, PREPARING, PREPARED };

/* A statement being prepared, kept for its run once Parse succeeded. The
 * pointers are the caller's, valid until its callback. */
struct pending {
    struct pg_stmt_key key;
    const char *const *values;
    const int *lengths;
    const int *formats;
};

struct pg_conn {
    PGconn *pg;
    struct event_base *base;
    struct event *io;    /* on the current socket, re-made when it changes */
    struct event *timer; /* connect or query deadline */
    int fd;
    enum state state;
    pg_connect_cb on_connect;
    pg_result_cb on_result;
    pg_broken_cb on_broken;
    void *arg;
    void *owner;
    PGresult *last; /* the result being collected */
    void (*on_free)(void *arg); /* the borrower of a lent connection */
    void *lent_to;
    struct pg_stmt_cache *stmts; /* NULL: every statement runs unnamed */
    enum step step;
    unsigned stmt_id;            /* PREPARING, PREPARED: its number */
    struct pending pending;      /* PREPARING */
    char err[256];
};

static void on_io(evutil_socket_t fd, short what, void *p);

/* Waits for `what` on the connection's socket. Returns 0, or -1. */
static int wait_for(struct pg_conn *c, short what)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -1;
    if (c->io && c->fd != fd) {
        event_free(c->io);
        c->io = NULL;
    }
    if (c->io == NULL) {
        c->io = event_new(c->base, fd, what, on_io, c);
        if (c->io == NULL)
            return -1;
        c->fd = fd;
    } else {
        event_del(c->io);
        if (event_assign(c->io, c->base, fd, what, on_io, c) != 0)
            return -1;
    }
    return event_add(c->io, NULL);
}

static void stop_waiting(struct pg_conn *c)
{
    if (c->io)
        event_del(c->io);
    event_del(c->timer);
}

static void arm_timer(struct pg_conn *c, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
    event_add(c->timer, &tv);
}

static void copy_error(struct pg_conn *c, const char *fallback)
{
    const char *msg = PQerrorMessage(c->pg);
    if (msg == NULL || *msg == '\0')
        msg = fallback;
    size_t n = strcspn(msg, "\n");
    if (n >= sizeof c->err)
        n = sizeof c->err - 1;
    memcpy(c->err, msg, n);
    c->err[n] = '\0';
}

/* ---- connecting ---------------------------------------------------------- */

/* Server notices (e.g. "already exists, skipping") are not errors. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void connect_done(struct pg_conn *c, int ok)
{
    if (ok)
        PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    stop_waiting(c);
    c->state = ok ? IDLE : BROKEN;
    pg_connect_cb cb = c->on_connect;
    c->on_connect = NULL;
    cb(c, ok, ok ? NULL : c->err, c->arg);
}

static void connect_step(struct pg_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (wait_for(c, EV_READ) == 0)
            return;
        break;
    case PGRES_POLLING_WRITING:
        if (wait_for(c, EV_WRITE) == 0)
            return;
        break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) == 0) {
            connect_done(c, 1);
            return;
        }
        break;
    default:
        break;
    }
    copy_error(c, "connection failed");
    connect_done(c, 0);
}

/* ---- queries ------------------------------------------------------------- */

static void query_done(struct pg_conn *c, PGresult *res, const char *err)
{
    stop_waiting(c);
    pg_result_cb cb = c->on_result;
    c->on_result = NULL;
    c->step = PLAIN;
    if (err != NULL)
        c->state = BROKEN;
    else
        c->state = IDLE;
    cb(c, res, err, c->arg);
}

static void fail_query(struct pg_conn *c, const char *fallback)
{
    copy_error(c, fallback);
    if (c->last) {
        PQclear(c->last);
        c->last = NULL;
    }
    query_done(c, NULL, c->err);
}

/* The first flush of what libpq just queued, then the wait for the rest.
 * Returns 0, or -1. */
static int start_sending(struct pg_conn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0 || wait_for(c, rc == 1 ? EV_READ | EV_WRITE : EV_READ) != 0)
        return -1;
    c->state = rc == 1 ? SENDING : READING;
    return 0;
}

/* ---- prepared statements ------------------------------------------------- */

/* A run of a cached statement failed in a way that leaves the statement
 * unusable: its cached plan went stale under DDL ("cached plan must not
 * change result type", 0A000; the message may be translated, so the
 * SQLSTATE alone decides), or the server no longer has it (26000). The
 * next use prepares it again, under a new name. */
static int prepared_went_bad(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return PQresultStatus(res) == PGRES_FATAL_ERROR && state != NULL &&
           (strcmp(state, "0A000") == 0 || strcmp(state, "26000") == 0);
}

/* Queues the run of prepared statement id. Returns libpq's 1, or 0. */
static int send_prepared(struct pg_conn *c, unsigned id, int nparams, const char *const *values,
                         const int *lengths, const int *formats)
{
    char name[PG_STMT_NAME_LEN];
    pg_stmt_name(id, name);
    c->step = PREPARED;
    c->stmt_id = id;
    return PQsendQueryPrepared(c->pg, name, nparams, values, lengths, formats, 0);
}

/* Queues a statement with parameters on a connection that caches them: its
 * cached name, or its Parse under a new one (the run follows once Parse
 * succeeds), or, once the bound is reached, the statement unnamed. Returns
 * libpq's 1, or 0. */
static int send_cached(struct pg_conn *c, const char *sql, int nparams, const Oid *types,
                       const char *const *values, const int *lengths, const int *formats)
{
    struct pg_stmt_key k = {sql, strlen(sql), types, nparams, 0};
    pg_stmt_hash(&k);
    unsigned id = pg_stmt_cache_find(c->stmts, &k);
    if (id != 0)
        return send_prepared(c, id, nparams, values, lengths, formats);
    if (pg_stmt_cache_full(c->stmts))
        return PQsendQueryParams(c->pg, sql, nparams, types, values, lengths, formats, 0);
    char name[PG_STMT_NAME_LEN];
    c->stmt_id = pg_stmt_cache_next(c->stmts);
    pg_stmt_name(c->stmt_id, name);
    c->pending = (struct pending){k, values, lengths, formats};
    c->step = PREPARING;
    return PQsendPrepare(c->pg, name, sql, nparams, types);
}

/* Parse succeeded: the statement is cached and its run sent. Returns 0, or
 * -1 when it cannot be sent. */
static int run_after_prepare(struct pg_conn *c)
{
    const struct pending *p = &c->pending;
    /* 0 when out of memory: the server holds it under this name all the
     * same, and the cache still counts it */
    (void)pg_stmt_cache_add(c->stmts, &p->key);
    if (send_prepared(c, c->stmt_id, p->key.ntypes, p->values, p->lengths, p->formats) == 0)
        return -1;
    return start_sending(c);
}

/* Queues the statement the way the connection runs it. Returns libpq's 1,
 * or 0. */
static int send_statement(struct pg_conn *c, const char *sql, int nparams, const Oid *types,
                          const char *const *values, const int *lengths, const int *formats)
{
    c->step = PLAIN;
    if (nparams < 0)
        return PQsendQuery(c->pg, sql);
    if (c->stmts != NULL && nparams > 0)
        return send_cached(c, sql, nparams, types, values, lengths, formats);
    return PQsendQueryParams(c->pg, sql, nparams, types, values, lengths, formats, 0);
}

/* Reads what the server sent; finishes when the last result is in. */
static void read_step(struct pg_conn *c)
{
    if (PQconsumeInput(c->pg) == 0) {
        fail_query(c, "connection lost");
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) { /* the statement is complete */
            PGresult *last = c->last;
            c->last = NULL;
            if (last == NULL) {
                fail_query(c, "no result");
                return;
            }
            if (c->step == PREPARING && PQresultStatus(last) == PGRES_COMMAND_OK) {
                PQclear(last);
                if (run_after_prepare(c) != 0)
                    fail_query(c, "cannot send the query");
                return;
            }
            if (c->step == PREPARED && prepared_went_bad(last))
                pg_stmt_cache_remove(c->stmts, c->stmt_id);
            query_done(c, last, NULL);
            return;
        }
        if (c->last) /* keep the last result, or the first error */
            PQclear(c->last);
        c->last = res;
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            fail_query(c, "connection lost");
            return;
        }
    }
    if (wait_for(c, EV_READ) != 0)
        fail_query(c, "cannot watch the socket");
}

/* Flushes the outgoing query; then reads. */
static void send_step(struct pg_conn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0) {
        fail_query(c, "cannot send the query");
        return;
    }
    if (rc == 1) { /* more to send; libpq may also need to read first */
        if (wait_for(c, EV_READ | EV_WRITE) != 0)
            fail_query(c, "cannot watch the socket");
        return;
    }
    c->state = READING;
    if (wait_for(c, EV_READ) != 0)
        fail_query(c, "cannot watch the socket");
}

/* ---- events -------------------------------------------------------------- */

static void on_io(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    struct pg_conn *c = p;
    switch (c->state) {
    case CONNECTING:
        connect_step(c);
        return;
    case SENDING:
        if (what & EV_READ && PQconsumeInput(c->pg) == 0) {
            fail_query(c, "connection lost");
            return;
        }
        send_step(c);
        return;
    case READING:
        read_step(c);
        return;
    case IDLE: /* readable while idle: the server closed it, or a notice */
        if (PQconsumeInput(c->pg) == 0 || PQstatus(c->pg) == CONNECTION_BAD ||
            wait_for(c, EV_READ) != 0) { /* else keep watching: EOF may follow */
            stop_waiting(c);
            c->state = BROKEN;
            if (c->on_broken)
                c->on_broken(c, c->arg);
        }
        return;
    case LENT: /* the borrower watches the socket */
    case BROKEN:
        stop_waiting(c);
        return;
    default:
        abort();
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    (void)what;
    struct pg_conn *c = p;
    if (c->state == CONNECTING) {
        if (c->err[0] == '\0')
            snprintf(c->err, sizeof c->err, "connect timeout");
        connect_done(c, 0);
    } else if (c->state == SENDING || c->state == READING) {
        if (c->last) {
            PQclear(c->last);
            c->last = NULL;
        }
        snprintf(c->err, sizeof c->err, "statement timeout");
        query_done(c, NULL, c->err);
    }
}

/* ---- API ----------------------------------------------------------------- */

struct pg_conn *pg_conn_start(struct event_base *base, const char *const *keys,
                              const char *const *values, double timeout_s, pg_connect_cb cb,
                              void *arg)
{
    struct pg_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->base = base;
    c->fd = -1;
    c->on_connect = cb;
    c->arg = arg;
    c->state = CONNECTING;
    c->timer = evtimer_new(base, on_timeout, c);
    c->pg = PQconnectStartParams(keys, values, 0);
    if (c->timer == NULL || c->pg == NULL) {
        pg_conn_free(c);
        return NULL;
    }
    arm_timer(c, timeout_s);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        /* report from the loop, never inside the caller */
        copy_error(c, "connection failed");
        struct timeval now = {0, 0};
        event_add(c->timer, &now);
        return c;
    }
    if (wait_for(c, EV_WRITE) != 0) {
        pg_conn_free(c);
        return NULL;
    }
    return c;
}

int pg_conn_query(struct pg_conn *c, const char *sql, int nparams, const Oid *types,
                  const char *const *values, const int *lengths, const int *formats,
                  double timeout_s, pg_result_cb cb, void *arg)
{
    if (c->state != IDLE)
        return -1;
    stop_waiting(c);
    /* the first flush is done here, but every outcome is reported later from
     * the loop: never call back into the caller from inside this call */
    if (send_statement(c, sql, nparams, types, values, lengths, formats) == 0 ||
        start_sending(c) != 0) {
        copy_error(c, "cannot send the query");
        c->step = PLAIN;
        c->state = BROKEN;
        return -1;
    }
    c->on_result = cb;
    c->arg = arg;
    arm_timer(c, timeout_s);
    return 0;
}

int pg_conn_prepare_statements(struct pg_conn *c, int max)
{
    if (c->stmts != NULL)
        abort(); /* once per connection */
    c->stmts = pg_stmt_cache_new(max);
    return c->stmts != NULL ? 0 : -1;
}

int pg_conn_prepared_count(const struct pg_conn *c)
{
    return c->stmts != NULL ? pg_stmt_cache_count(c->stmts) : 0;
}

void pg_conn_watch_idle(struct pg_conn *c, pg_broken_cb cb, void *arg)
{
    c->on_broken = cb;
    c->arg = arg;
    if (c->state == IDLE && wait_for(c, EV_READ) != 0)
        c->state = BROKEN;
}

int pg_conn_usable(const struct pg_conn *c)
{
    return c->state == IDLE && PQstatus(c->pg) == CONNECTION_OK &&
           PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

PGconn *pg_conn_libpq(const struct pg_conn *c)
{
    return c->pg;
}

int pg_conn_backend_pid(const struct pg_conn *c)
{
    return c->pg ? PQbackendPID(c->pg) : 0;
}

void pg_conn_set_owner(struct pg_conn *c, void *owner) { c->owner = owner; }
void *pg_conn_owner(const struct pg_conn *c) { return c->owner; }

PGconn *pg_conn_lend(struct pg_conn *c, void (*on_free)(void *arg), void *arg)
{
    if (c->state != IDLE)
        return NULL;
    stop_waiting(c);
    c->state = LENT;
    c->on_free = on_free;
    c->lent_to = arg;
    return c->pg;
}

void pg_conn_take_back(struct pg_conn *c, int ok)
{
    if (c->state != LENT)
        abort();
    c->on_free = NULL;
    c->lent_to = NULL;
    c->state = ok && PQstatus(c->pg) == CONNECTION_OK ? IDLE : BROKEN;
}

struct event_base *pg_conn_base(const struct pg_conn *c)
{
    return c->base;
}

void pg_conn_free(struct pg_conn *c)
{
    if (c == NULL)
        return;
    if (c->on_free)
        c->on_free(c->lent_to);
    if (c->io)
        event_free(c->io);
    if (c->timer)
        event_free(c->timer);
    if (c->last)
        PQclear(c->last);
    if (c->pg)
        PQfinish(c->pg);
    pg_stmt_cache_free(c->stmts);
    free(c);
}
