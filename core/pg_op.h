/* pg_op.h — one database operation on the event loop. Free of Lua.
 *
 * An operation takes a connection from a pool (at once when one is idle, else
 * by waiting for one), sends one statement on it (or a COPY FROM STDIN with
 * its data, pg_copy.h) and gives the connection back when the result is in. When the send itself fails, nothing ran: the
 * connection is closed and the statement goes once more on another one. Once
 * sent, a statement is never sent again. An operation may also only take a
 * connection (acquire_only), or run on a pinned connection (pg_pin) that its
 * keeper holds across statements.
 *
 * The outcome comes by one callback, `done`, exactly once unless the
 * operation is cancelled first; the operation is freed right after `done`
 * returns. lmod_db.c binds this to Lua: the request parks on the operation
 * and `done` resumes it. */
#ifndef STEEPLE_PG_OP_H
#define STEEPLE_PG_OP_H

#include <libpq-fe.h>
#include <stddef.h>

struct pg_conn;
struct pg_pool;
struct pg_settings;
struct pg_waiter;
struct pg_op;

/* A connection its keeper holds across statements (conn:query). The keeper
 * and a statement running on it share it: the last of them to let go gives
 * the connection back and frees the pin, so a statement still running when
 * its keeper is gone never touches freed memory. */
struct pg_pin {
    struct pg_conn *conn;
    int busy;       /* a statement is in flight */
    int released;   /* the keeper let go while busy */
    double timeout; /* seconds per statement; 0 = the settings' limit */
};

/* Pins c, or returns NULL (out of memory; c is then still the caller's). */
struct pg_pin *pg_pin_new(struct pg_conn *c) __attribute__((warn_unused_result));
/* The keeper lets go: the connection goes back to its pool now (closed
 * instead when left inside a transaction), or when the running statement
 * ends. */
void pg_pin_release(struct pg_pin *pin);

typedef void (*pg_op_done_cb)(struct pg_op *op, void *arg);
/* Writes op->sql on the connection it is about to be sent on (to quote names
 * with PQescapeIdentifier). Returns 0, or -1. */
typedef int (*pg_op_build_fn)(struct pg_op *op, PGconn *pg);

struct pg_op {
    /* what to run: the caller fills these in before starting */
    struct pg_pool *pool;  /* where the connection comes from, or NULL with pin */
    struct pg_pin *pin;    /* run on this pinned connection instead */
    int acquire_only;      /* only take a connection: it ends in `conn` */
    int copy;              /* sql is a COPY ... FROM STDIN fed with values[0], lengths[0]
                            * bytes (pg_copy.h); the count is in PQcmdTuples(res) */
    pg_op_build_fn build;  /* NULL: sql is ready */
    char *sql;
    int nparams;           /* < 0: a script of several statements, no parameters */
    Oid *types;
    char **values;
    int *lengths;
    int *formats;
    double timeout;        /* the statement's limit, seconds */
    double deadline;       /* monotonic: waits for a connection end by then (INFINITY: none) */
    pg_op_done_cb done;
    void *arg;
    /* the outcome, for `done` (and after a refusal, for the caller) */
    PGresult *res;          /* the statement's result (freed with the op), or NULL */
    struct pg_conn *conn;   /* acquire_only: the connection, now the caller's */
    int unavailable;        /* no result: err and retry_after say why */
    double retry_after;
    char err[256];
    /* pg_op.c's own */
    struct pg_waiter *waiter; /* while waiting for a connection */
    int retried;
    int cancelled;
};

/* A zeroed operation with `extra` bytes after it (for the SQL and the
 * parameters, suitably aligned for pointers), or NULL. */
struct pg_op *pg_op_new(size_t extra) __attribute__((warn_unused_result));
/* An operation for sql (sqllen bytes) with n parameters whose values take
 * `text` bytes in all (with their NULs): the SQL is copied and the parameter
 * arrays laid out zeroed (NULLs, text format) in one block; *text is where
 * the values go. NULL when out of memory. */
struct pg_op *pg_op_new_statement(const char *sql, size_t sqllen, int n, size_t text,
                                  char **text_at) __attribute__((warn_unused_result));

/* Names CREATE/DROP DATABASE accept: tenant_ then lower-case letters and
 * digits, the template and the name it is built under (steeple_template,
 * steeple_template_new), or doctor's scratch databases (steeple_doctor_...). */
int pg_op_ddl_name_ok(const char *s, size_t n);
/* An operation that runs CREATE DATABASE name [TEMPLATE tmpl] (kind 'c') or
 * DROP DATABASE IF EXISTS name WITH (FORCE) (kind 'd'), the names (checked
 * by pg_op_ddl_name_ok) quoted on the connection it runs on. NULL when out
 * of memory. */
struct pg_op *pg_op_new_ddl(int kind, const char *name, const char *tmpl)
    __attribute__((warn_unused_result));

/* Frees an operation that was never started or was refused. */
void pg_op_free(struct pg_op *op);

enum pg_op_start {
    PG_OP_PENDING, /* `done` comes later, from the loop */
    PG_OP_DONE,    /* acquire_only: op->conn is set now; `done` is not called */
    PG_OP_REFUSED, /* err and retry_after are set; `done` is not called */
};

/* Runs op: on its pin, or on an idle connection of its pool at once, or
 * after waiting for one. */
enum pg_op_start pg_op_start(struct pg_op *op);
/* Runs op on a connection of its pool after waiting for one, even when one
 * is idle now. */
enum pg_op_start pg_op_wait(struct pg_op *op);
/* The caller gives up on op before `done`: a wait ends at once, a running
 * statement is left to finish and then gives its connection back. */
void pg_op_cancel(struct pg_op *op);

/* Sets op->timeout to `limit` seconds, or less when op->deadline is nearer.
 * Returns 0, or -1 with err set when the deadline has passed. */
int pg_op_limit(struct pg_op *op, double limit);

/* The core's own limit on a statement, seconds: the server's
 * statement_timeout fires first (a clean SQL error on a connection that stays
 * usable); this only catches a server or network that stopped answering. */
double pg_op_timeout(const struct pg_settings *s);

#endif
