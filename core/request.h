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

#include <lua.h>

struct evhttp_request;
struct worker;
struct request;

/* evhttp's generic callback; arg is the worker. */
void request_handle(struct evhttp_request *req, void *arg);

/* The request whose coroutine is L, or raises "API disabled in this context"
 * (script loading, module top level, a coroutine of the script's own, or a
 * state with no running request). `what` names the calling function. */
struct request *request_check(lua_State *L, const char *what);

/* Pushes the results of an operation onto L; returns how many. */
typedef int (*request_retval_fn)(lua_State *L, void *data);

/* Parks the request on an operation: `cleanup(data)` cancels it if the
 * request dies first. The binding then returns lua_yield(L, 0). */
void request_suspend(struct request *r, void (*cleanup)(void *data), void *data);

/* Resumes a parked request with the results retval(L, data) pushes. Call it
 * from the operation's event callback; r may be freed when it returns. */
void request_resume(struct request *r, request_retval_fn retval, void *data);

/* The largest body to read for a request to method and path: app.body_limit
 * of the current scripts (a route's own limit), or 0 (limits.body_bytes)
 * when the scripts have none or it fails. arg is the worker; the signature
 * is http_conn.h's http_path_limit_fn. */
long request_body_limit(void *arg, const char *method, const char *path);

/* The worker a request belongs to. */
struct worker *request_worker(const struct request *r);

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
int request_spawn(struct worker *w, lua_State *from, int nargs, int *exit_code);

/* Ends every request still running: used at shutdown. */
void request_abort_all(struct worker *w);

#endif
