/* pg_op.c — one database operation: wait, acquire, send, retry once, cancel
 * (see pg_op.h). */
#include "pg_op.h"
#include "clock.h"
#include "pg_conn.h"
#include "pg_pool.h"

#include <stdio.h>
#include <stdlib.h>

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

double pg_op_timeout(const struct pg_settings *s)
{
    return s->statement_timeout_s * 1.25 + 1.0;
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
