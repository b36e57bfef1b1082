/* pg_op.c — one database operation: wait, acquire, send, retry once, cancel
 * (see pg_op.h). */
#include "pg_op.h"
#include "clock.h"
#include "pg_conn.h"
#include "pg_copy.h"
#include "pg_pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- pinned connections -------------------------------------------------- */

struct pg_pin *pg_pin_new(struct pg_conn *c)
{
    struct pg_pin *pin = calloc(1, sizeof *pin);
    if (pin != NULL)
        pin->conn = c;
    return pin;
}

void pg_pin_release(struct pg_pin *pin)
{
    if (pin->busy) { /* the statement's end gives it back */
        pin->released = 1;
        return;
    }
    pg_pool_release(pin->conn, 1); /* closed instead when left inside a transaction */
    free(pin);
}

/* ---- the operation ------------------------------------------------------- */

/* One block: the extra bytes start at op + 1, aligned as the struct is (it
 * holds pointers and doubles). */
struct pg_op *pg_op_new(size_t extra)
{
    return calloc(1, sizeof(struct pg_op) + extra);
}

void pg_op_free(struct pg_op *op)
{
    if (op->res)
        PQclear(op->res);
    free(op);
}

struct pg_op *pg_op_new_statement(const char *sql, size_t sqllen, int n, size_t text,
                                  char **text_at)
{
    size_t arrays = (size_t)n * (sizeof(Oid) + sizeof(char *) + 2 * sizeof(int));
    struct pg_op *op = pg_op_new(arrays + sqllen + 1 + text);
    if (op == NULL)
        return NULL;
    char *p = (char *)(op + 1); /* widest alignment first */
    op->nparams = n;
    op->values = (char **)p;
    p += (size_t)n * sizeof(char *);
    op->types = (Oid *)p;
    p += (size_t)n * sizeof(Oid);
    op->lengths = (int *)p;
    p += (size_t)n * sizeof(int);
    op->formats = (int *)p;
    p += (size_t)n * sizeof(int);
    op->sql = p;
    memcpy(p, sql, sqllen);
    p[sqllen] = '\0';
    *text_at = p + sqllen + 1;
    return op;
}

/* ---- CREATE and DROP DATABASE -------------------------------------------- */

#define DDL_NAME_MAX 63

/* Kept after the op; the SQL is written on the connection it runs on. */
struct ddl_spec {
    int kind; /* 'c' or 'd' */
    char name[DDL_NAME_MAX + 1];
    char tmpl[DDL_NAME_MAX + 1];
    char sql[256];
};

int pg_op_ddl_name_ok(const char *s, size_t n)
{
    const char *rest = NULL;
    if (n > DDL_NAME_MAX)
        return 0;
    if (strncmp(s, "tenant_", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "steeple_doctor_", 15) == 0)
        rest = s + 15;
    else
        return strcmp(s, "steeple_template") == 0 || strcmp(s, "steeple_template_new") == 0;
    if (*rest == '\0')
        return 0;
    for (; *rest; rest++)
        if (!((*rest >= 'a' && *rest <= 'z') || (*rest >= '0' && *rest <= '9')))
            return 0;
    return 1;
}

/* Writes the statement, its names quoted with PQescapeIdentifier. */
static int build_ddl(struct pg_op *op, PGconn *pg)
{
    struct ddl_spec *d = (struct ddl_spec *)(op + 1);
    char *name = PQescapeIdentifier(pg, d->name, strlen(d->name));
    char *tmpl = d->tmpl[0] ? PQescapeIdentifier(pg, d->tmpl, strlen(d->tmpl)) : NULL;
    int rc = -1;
    if (name && (tmpl || !d->tmpl[0])) {
        if (d->kind == 'c' && tmpl)
            snprintf(d->sql, sizeof d->sql, "CREATE DATABASE %s TEMPLATE %s", name, tmpl);
        else if (d->kind == 'c')
            snprintf(d->sql, sizeof d->sql, "CREATE DATABASE %s", name);
        else
            snprintf(d->sql, sizeof d->sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
        rc = 0;
    }
    PQfreemem(name);
    PQfreemem(tmpl);
    return rc;
}

struct pg_op *pg_op_new_ddl(int kind, const char *name, const char *tmpl)
{
    struct pg_op *op = pg_op_new(sizeof(struct ddl_spec));
    if (op == NULL)
        return NULL;
    struct ddl_spec *d = (struct ddl_spec *)(op + 1);
    d->kind = kind;
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->tmpl, sizeof d->tmpl, "%s", tmpl ? tmpl : "");
    op->sql = d->sql;
    op->build = build_ddl;
    return op;
}

/* ---- running it ---------------------------------------------------------- */

double pg_op_timeout(const struct pg_settings *s)
{
    return s->statement_timeout_s * 1.25 + 1.0;
}

int pg_op_limit(struct pg_op *op, double limit)
{
    double left = op->deadline - clock_mono();
    op->timeout = left < limit ? (left > 0 ? left : 0) : limit;
    if (op->timeout > 0)
        return 0;
    snprintf(op->err, sizeof op->err, "the request's database deadline has passed");
    return -1;
}

/* The outcome is in: `done` reads it, then the operation is gone. */
static void finish(struct pg_op *op)
{
    op->done(op, op->arg);
    pg_op_free(op);
}

static void fail(struct pg_op *op, const char *err)
{
    op->unavailable = 1;
    if (err != NULL)
        snprintf(op->err, sizeof op->err, "%s", err);
    finish(op);
}

static void on_result(struct pg_conn *c, PGresult *res, const char *err, void *arg);
static void on_acquired(struct pg_conn *c, const char *err, double retry_after, void *arg);

static int send_on(struct pg_op *op, struct pg_conn *c)
{
    if (op->build && op->build(op, pg_conn_libpq(c)) != 0)
        return -1;
    if (op->copy)
        return pg_copy_start(c, op->sql, op->values[0], (size_t)op->lengths[0], op->timeout,
                             on_result, op);
    return pg_conn_query(c, op->sql, op->nparams, op->types, (const char *const *)op->values,
                         op->lengths, op->formats, op->timeout, on_result, op);
}

/* Queues op for a connection of its pool. Returns 0, or -1 with err and
 * retry_after set. */
static int wait_for_conn(struct pg_op *op)
{
    op->waiter = pg_pool_wait(op->pool, op->deadline - clock_mono(), on_acquired, op,
                              &op->retry_after, op->err, sizeof op->err);
    return op->waiter != NULL ? 0 : -1;
}

static void on_acquired(struct pg_conn *c, const char *err, double retry_after, void *arg)
{
    struct pg_op *op = arg;
    op->waiter = NULL;
    if (c == NULL) {
        op->retry_after = retry_after;
        fail(op, err);
        return;
    }
    if (op->acquire_only) {
        op->conn = c;
        finish(op);
        return;
    }
    if (send_on(op, c) == 0)
        return;
    pg_pool_release(c, 0);
    if (op->retried++ > 0)
        fail(op, "cannot send the query");
    else if (wait_for_conn(op) != 0)
        fail(op, NULL);
}

static void on_result(struct pg_conn *c, PGresult *res, const char *err, void *arg)
{
    struct pg_op *op = arg;
    int failed = err != NULL;
    if (failed) /* err lives in the connection, which may be freed below */
        snprintf(op->err, sizeof op->err, "%s", err);
    if (op->pin) {
        op->pin->busy = 0;
        if (op->pin->released) { /* let go while the statement ran */
            pg_pool_release(c, 0);
            free(op->pin);
            op->pin = NULL;
        }
    } else {
        pg_pool_release(c, !failed);
    }
    if (op->cancelled) {
        if (res)
            PQclear(res);
        pg_op_free(op);
        return;
    }
    if (failed) { /* once sent, a statement may have run: it is never sent again */
        fail(op, NULL);
        return;
    }
    op->res = res;
    finish(op);
}

static enum pg_op_start start_pinned(struct pg_op *op)
{
    if (send_on(op, op->pin->conn) != 0) {
        snprintf(op->err, sizeof op->err, "the connection is broken");
        op->unavailable = 1;
        return PG_OP_REFUSED;
    }
    op->pin->busy = 1;
    return PG_OP_PENDING;
}

enum pg_op_start pg_op_wait(struct pg_op *op)
{
    if (wait_for_conn(op) != 0) {
        op->unavailable = 1;
        return PG_OP_REFUSED;
    }
    return PG_OP_PENDING;
}

enum pg_op_start pg_op_start(struct pg_op *op)
{
    if (op->pin)
        return start_pinned(op);
    struct pg_conn *c = pg_pool_try_acquire(op->pool);
    if (c && op->acquire_only) {
        op->conn = c;
        return PG_OP_DONE;
    }
    if (c && send_on(op, c) == 0)
        return PG_OP_PENDING;
    if (c) /* went bad while idle */
        pg_pool_release(c, 0);
    return pg_op_wait(op);
}

void pg_op_cancel(struct pg_op *op)
{
    if (op->waiter) {
        pg_waiter_cancel(op->waiter);
        pg_op_free(op);
        return;
    }
    op->cancelled = 1; /* a statement runs: its end frees op */
}
