/* pg_conn.h — one PostgreSQL connection driven by libpq in non-blocking mode
 * on the event loop: connect, one query at a time, results by callback.
 * Free of Lua. */
#ifndef STEEPLE_PG_CONN_H
#define STEEPLE_PG_CONN_H

#include <libpq-fe.h>

struct event_base;
struct pg_conn;

/* Connect finished: ok = 1, or 0 with a message (the connection is then
 * unusable; free it). */
typedef void (*pg_connect_cb)(struct pg_conn *c, int ok, const char *err, void *arg);
/* A query finished: res is the last result (the callee owns it and PQclear()s
 * it), or NULL with a message when the connection failed or timed out. */
typedef void (*pg_result_cb)(struct pg_conn *c, PGresult *res, const char *err, void *arg);
/* An idle connection was closed by the server or broke. */
typedef void (*pg_broken_cb)(struct pg_conn *c, void *arg);

/* Starts connecting with libpq keyword/value arrays (NULL-terminated).
 * Returns NULL when libpq cannot even start (out of memory). */
struct pg_conn *pg_conn_start(struct event_base *base, const char *const *keys,
                              const char *const *values, double timeout_s, pg_connect_cb cb,
                              void *arg) __attribute__((warn_unused_result));

/* Sends one statement with text or binary parameters; nparams < 0 sends a
 * script of several statements without parameters (the simple protocol, for
 * migrations). A statement with parameters (nparams > 0) on a connection
 * that prepares statements (pg_conn_prepare_statements) runs as a named
 * prepared statement, prepared on its first use (one more round trip); any
 * other runs as the unnamed statement (no session state). Either way the
 * callback sees the same result or SQL error. sql, types, values, lengths
 * and formats stay the caller's and must stay valid until the callback.
 * timeout_s bounds the whole exchange; on expiry the connection is marked
 * broken and the callback gets an error. Returns 0, or -1 when the
 * connection cannot take a query now. */
int pg_conn_query(struct pg_conn *c, const char *sql, int nparams, const Oid *types,
                  const char *const *values, const int *lengths, const int *formats,
                  double timeout_s, pg_result_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* From now on, statements with parameters are prepared on c, at most max of
 * them (pg_stmt_cache.h: further ones run unnamed). Call it once, before the
 * first query. Returns 0, or -1 when out of memory. */
int pg_conn_prepare_statements(struct pg_conn *c, int max) __attribute__((warn_unused_result));
/* The statements cached on c (0 when it prepares none); for tests. */
int pg_conn_prepared_count(const struct pg_conn *c);

/* While idle, watch the socket so a server-side close is noticed at once. */
void pg_conn_watch_idle(struct pg_conn *c, pg_broken_cb cb, void *arg);

/* 1 while the connection is idle, healthy and outside a transaction. */
int pg_conn_usable(const struct pg_conn *c);
/* The libpq connection, for escaping functions only. */
PGconn *pg_conn_libpq(const struct pg_conn *c);
/* The server's backend pid (for tests and logs). */
int pg_conn_backend_pid(const struct pg_conn *c);

/* Lends the libpq connection of an idle connection to another driver
 * (core/pg_copy.c): the socket is no longer watched and the connection
 * counts as busy until pg_conn_take_back. If the connection is freed while
 * lent, on_free(arg) is called first, so the borrower lets go of it.
 * Returns the PGconn, or NULL when the connection is not idle. */
PGconn *pg_conn_lend(struct pg_conn *c, void (*on_free)(void *arg), void *arg)
    __attribute__((warn_unused_result));
/* Ends a loan: ok = 1 makes the connection idle again, 0 marks it broken. */
void pg_conn_take_back(struct pg_conn *c, int ok);
struct event_base *pg_conn_base(const struct pg_conn *c);

/* Closes and frees. Safe in any state; a pending callback is never called. */
void pg_conn_free(struct pg_conn *c);

/* Opaque pointer for the owner (the pool). */
void pg_conn_set_owner(struct pg_conn *c, void *owner);
void *pg_conn_owner(const struct pg_conn *c);

#endif
