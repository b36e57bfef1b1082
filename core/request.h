/* request.h — an HTTP request running as a Lua coroutine.
 *
 * evhttp hands each request to request_handle(), which runs app.handle in a
 * new coroutine of the current script state. A binding that must wait (a
 * timer, a thread-pool job, later a query) suspends the coroutine with
 * request_suspend() and `return lua_yield(L, 0)`; the event callback later
 * calls request_resume() with the same retval function the synchronous path
 * uses. If the client goes away or the deadline passes first, the request
 * calls the pending operation's cleanup and the callback never comes. */
#ifndef STEEPLE_REQUEST_H
#define STEEPLE_REQUEST_H

#include "metrics.h"

#include <sys/queue.h>
#include <sys/time.h>

struct lua_State;
struct evhttp_request;
struct conn_guard;
struct http_conns;
struct watchdog;
struct host;
struct request;

LIST_HEAD(request_list, request);

/* The requests and background tasks of one host. The worker fills the first
 * part; request.c keeps the rest. */
struct request_set {
    struct host *host;
    struct conn_guard *guard;  /* NULL without HTTP (a command-line worker) */
    struct http_conns *conns;  /* client connections, read through a framer */
    struct watchdog *watchdog;
    const struct timeval *timeout_tv; /* limits.request_timeout_s, a libevent common timeout */
    /* called whenever a request ends or a response is written: a stopping
     * worker ends its loop once request_set_idle() */
    void (*on_idle)(void *arg);
    void *idle_arg;
    struct metrics_histogram seconds; /* steeple_http_request_duration_seconds */

    struct request *running; /* whose coroutine is executing, or NULL */
    struct request_list live; /* every live request and task */
    int nlive;
    int writing; /* responses handed to evhttp and not yet written */
};

/* Empties a set (its first part is the caller's to fill). */
void request_set_init(struct request_set *rs, struct host *h);
/* Whether nothing runs and nothing is being written. */
int request_set_idle(const struct request_set *rs);

/* evhttp's generic callback; arg is the request set. */
void request_handle(struct evhttp_request *req, void *arg);

/* The request whose coroutine is L, or raises "API disabled in this context"
 * (script loading, module top level, a coroutine of the script's own, or a
 * state with no running request). `what` names the calling function. */
struct request *request_check(struct lua_State *L, const char *what);

/* The request or task whose coroutine runs now on L's host, or NULL. */
struct request *request_running(struct lua_State *L);

/* Pushes the results of an operation onto L; returns how many. */
typedef int (*request_retval_fn)(struct lua_State *L, void *data);

/* Parks the request on an operation: `cleanup(data)` cancels it if the
 * request dies first. The binding then returns lua_yield(L, 0). */
void request_suspend(struct request *r, void (*cleanup)(void *data), void *data);

/* Resumes a parked request with the results retval(L, data) pushes. Call it
 * from the operation's event callback; r may be freed when it returns. */
void request_resume(struct request *r, request_retval_fn retval, void *data);

/* The host a request belongs to: its services (host.h). */
struct host *request_host(const struct request *r);

/* A limit on the database work of the rest of the request: acquires wait and
 * statements run at most until `seconds` from now (<= 0 removes it). */
void request_set_db_deadline(struct request *r, double seconds);
/* Seconds left before that limit (<= 0: passed), or INFINITY without one. */
double request_db_time_left(const struct request *r);
const char *request_id(const struct request *r);

/* Called by the watchdog thread when the coroutine co, running now, has
 * passed its request's deadline: arms a hook that stops it. */
void request_overrun(void *co);

/* Starts a background task: moves a function and `nargs` arguments from the
 * top of `from` (a thread of the caller's script state) into a new coroutine
 * that first runs on the next loop iteration. It has no deadline and no HTTP
 * side; bindings work in it as in a request. When it returns, *exit_code
 * (if given) gets its integer result (0 otherwise; 1 if it failed). Returns
 * 0, or -1 if it could not start. */
int request_spawn(struct request_set *rs, struct lua_State *from, int nargs, int *exit_code);

/* request_spawn with a bound: `seconds` after the start (a positive finite
 * number; otherwise there is none) the task is ended where it waits (its
 * pending operation cancelled, its to-be-closed variables closed), a warning
 * "task ended at its deadline" is logged and *exit_code gets 1; a task that
 * keeps the CPU past it is stopped as a request would be. Returns 0, or -1
 * if it could not start. */
int request_spawn_until(struct request_set *rs, struct lua_State *from, int nargs, int *exit_code,
                        double seconds);

/* Ends every request still running: used at shutdown. */
void request_abort_all(struct request_set *rs);

#endif
