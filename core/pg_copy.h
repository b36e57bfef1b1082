/* pg_copy.h — COPY ... FROM STDIN on a pooled connection, on the event loop:
 * libpq in non-blocking mode, the data fed as the socket takes it, never a
 * blocking call. Free of Lua. */
#ifndef STEEPLE_PG_COPY_H
#define STEEPLE_PG_COPY_H

#include "pg_conn.h"

#include <stddef.h>

/* Runs `sql` (one COPY ... FROM STDIN statement) on the idle connection c
 * and sends `len` bytes of `data` (COPY text or CSV, as the statement says).
 * data must stay valid and unchanged until cb is called. timeout_s bounds
 * the whole operation; on expiry the connection is marked broken.
 *
 * cb gets, as pg_conn_query's callback does, the last result (COMMAND_OK
 * with the row count in PQcmdTuples, or the server's error; the callee owns
 * it) or NULL with a message when the connection failed or timed out. cb is
 * always called from the loop, never inside this call, and never when c is
 * freed first.
 *
 * Returns 0, or -1 when the connection cannot take a statement now (nothing
 * was sent). */
int pg_copy_start(struct pg_conn *c, const char *sql, const char *data, size_t len,
                  double timeout_s, pg_result_cb cb, void *arg)
    __attribute__((warn_unused_result));

#endif
