/* pg_copy.c — COPY FROM STDIN on the event loop (see pg_copy.h).
 *
 * The connection is lent by pg_conn for the whole operation, which moves
 * through these steps, each waiting on the socket when libpq would block:
 *
 *   FLUSH_SQL   the COPY statement goes out
 *   AWAIT_COPY  the server answers CopyInResponse (or an error: READ's end)
 *   PUT         PQputCopyData in chunks until it takes no more (0), then
 *               wait for write-readiness and PQflush; then PQputCopyEnd
 *   FLUSH_END   the rest of the data and CopyDone go out
 *   READ        the statement's result, until PQgetResult says NULL
 *
 * An error the server sends while data still goes out ends the copy
 * (PQputCopyData answers -1): the error is then read like any result. */
#include "pg_copy.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 65536

enum step { FLUSH_SQL, AWAIT_COPY, PUT, FLUSH_END, READ };

struct pg_copy {
    struct pg_conn *conn;
    PGconn *pg;
    struct event *io;
    struct event *timer;
    enum step step;
    const char *data;
    size_t len, off;
    PGresult *last; /* the last result read */
    pg_result_cb cb;
    void *arg;
    char err[256];
};

static void on_io(evutil_socket_t fd, short what, void *p);

static void free_copy(struct pg_copy *cp)
{
    if (cp->io)
        event_free(cp->io);
    if (cp->timer)
        event_free(cp->timer);
    if (cp->last)
        PQclear(cp->last);
    free(cp);
}

/* The connection is being freed under the copy: let go, call nobody. */
static void on_conn_free(void *arg)
{
    free_copy(arg);
}

/* Ends the operation: gives the connection back, frees the state, then
 * calls back with res (owned by the callee) or err. */
static void finish(struct pg_copy *cp, PGresult *res, const char *err)
{
    struct pg_conn *c = cp->conn;
    pg_result_cb cb = cp->cb;
    void *arg = cp->arg;
    char msg[sizeof cp->err];
    if (err)
        snprintf(msg, sizeof msg, "%s", err);
    pg_conn_take_back(c, err == NULL);
    free_copy(cp);
    cb(c, res, err ? msg : NULL, arg);
}

/* Ends with libpq's message (its first line), or `fallback`. */
static void fail(struct pg_copy *cp, const char *fallback)
{
    const char *msg = PQerrorMessage(cp->pg);
    if (msg == NULL || *msg == '\0')
        msg = fallback;
    size_t n = strcspn(msg, "\n");
    if (n >= sizeof cp->err)
        n = sizeof cp->err - 1;
    memcpy(cp->err, msg, n);
    cp->err[n] = '\0';
    finish(cp, NULL, cp->err);
}

/* Waits for `what` on the socket. Returns 0, or -1. */
static int wait_for(struct pg_copy *cp, short what)
{
    int fd = PQsocket(cp->pg);
    if (fd < 0)
        return -1;
    if (cp->io == NULL) {
        cp->io = event_new(pg_conn_base(cp->conn), fd, what, on_io, cp);
        if (cp->io == NULL)
            return -1;
    } else {
        event_del(cp->io);
        if (event_assign(cp->io, pg_conn_base(cp->conn), fd, what, on_io, cp) != 0)
            return -1;
    }
    return event_add(cp->io, NULL);
}

/* Keeps res as the last result. */
static void keep(struct pg_copy *cp, PGresult *res)
{
    if (cp->last)
        PQclear(cp->last);
    cp->last = res;
}

/* Flushes; returns 1 when done, 0 while waiting, -1 after failing. */
static int flushed(struct pg_copy *cp)
{
    int rc = PQflush(cp->pg);
    if (rc < 0) {
        fail(cp, "cannot send the data");
        return -1;
    }
    if (rc == 0)
        return 1;
    if (wait_for(cp, EV_READ | EV_WRITE) != 0) {
        fail(cp, "cannot watch the socket");
        return -1;
    }
    return 0;
}

/* Feeds data until libpq takes no more; returns 1 when all of it and the
 * end are queued (or the copy ended early), 0 while waiting, -1 after
 * failing. */
static int put(struct pg_copy *cp)
{
    if (PQflush(cp->pg) < 0) {
        fail(cp, "cannot send the data");
        return -1;
    }
    int rc = 1;
    while (rc == 1 && cp->off < cp->len) {
        size_t n = cp->len - cp->off < CHUNK ? cp->len - cp->off : CHUNK;
        rc = PQputCopyData(cp->pg, cp->data + cp->off, (int)n);
        if (rc == 1)
            cp->off += n;
    }
    if (rc == 1)
        rc = PQputCopyEnd(cp->pg, NULL);
    if (rc != 0) { /* queued (1), or the server ended the copy (-1) */
        cp->step = rc == 1 ? FLUSH_END : READ;
        return 1;
    }
    if (wait_for(cp, EV_READ | EV_WRITE) != 0) {
        fail(cp, "cannot watch the socket");
        return -1;
    }
    return 0;
}

/* Reads results; returns 1 on COPY IN (moves to PUT), 0 while waiting or
 * once finished (then cp is freed). */
static int read_results(struct pg_copy *cp)
{
    while (!PQisBusy(cp->pg)) {
        PGresult *res = PQgetResult(cp->pg);
        if (res == NULL) {
            PGresult *last = cp->last;
            cp->last = NULL;
            if (last == NULL)
                fail(cp, "no result");
            else
                finish(cp, last, NULL);
            return 0;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN && cp->step == AWAIT_COPY) {
            PQclear(res);
            cp->step = PUT;
            return 1;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res); /* not a COPY FROM STDIN, or one that never ends */
            fail(cp, "the statement is not a COPY FROM STDIN");
            return 0;
        }
        keep(cp, res);
    }
    if (wait_for(cp, EV_READ) != 0)
        fail(cp, "cannot watch the socket");
    return 0;
}

/* Moves through the steps as far as the socket allows. */
static void advance(struct pg_copy *cp)
{
    for (;;) {
        int go;
        switch (cp->step) {
        case FLUSH_SQL:
            go = flushed(cp);
            if (go == 1)
                cp->step = AWAIT_COPY;
            break;
        case AWAIT_COPY:
        case READ:
            go = read_results(cp);
            break;
        case PUT:
            go = put(cp);
            break;
        case FLUSH_END:
            go = flushed(cp);
            if (go == 1)
                cp->step = READ;
            break;
        default:
            abort();
        }
        if (go != 1)
            return;
    }
}

static void on_io(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    struct pg_copy *cp = p;
    if ((what & EV_READ) && PQconsumeInput(cp->pg) == 0) {
        fail(cp, "connection lost");
        return;
    }
    advance(cp);
}

static void on_timeout(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    (void)what;
    struct pg_copy *cp = p;
    snprintf(cp->err, sizeof cp->err, "statement timeout");
    finish(cp, NULL, cp->err);
}

int pg_copy_start(struct pg_conn *c, const char *sql, const char *data, size_t len,
                  double timeout_s, pg_result_cb cb, void *arg)
{
    struct pg_copy *cp = calloc(1, sizeof *cp);
    if (cp == NULL)
        return -1;
    cp->conn = c;
    cp->data = data;
    cp->len = len;
    cp->cb = cb;
    cp->arg = arg;
    cp->step = FLUSH_SQL;
    cp->timer = evtimer_new(pg_conn_base(c), on_timeout, cp);
    if (cp->timer == NULL) {
        free_copy(cp);
        return -1;
    }
    cp->pg = pg_conn_lend(c, on_conn_free, cp);
    if (cp->pg == NULL) {
        free_copy(cp);
        return -1;
    }
    /* every outcome is reported from the loop: the first step waits for the
     * socket to take the statement */
    if (PQsendQueryParams(cp->pg, sql, 0, NULL, NULL, NULL, NULL, 0) == 0 ||
        wait_for(cp, EV_WRITE) != 0) {
        pg_conn_take_back(c, 0);
        free_copy(cp);
        return -1;
    }
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
    if (event_add(cp->timer, &tv) != 0) {
        pg_conn_take_back(c, 0);
        free_copy(cp);
        return -1;
    }
    return 0;
}
