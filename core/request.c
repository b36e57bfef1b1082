/* request.c — an HTTP request running as a Lua coroutine (see request.h). */
#include "request.h"
#include "clock.h"
#include "conn_guard.h"
#include "crypto.h"
#include "host.h"
#include "http_conn.h"
#include "http_reply.h"
#include "log.h"
#include "lua_host.h"
#include "metrics.h"
#include "watchdog.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct request {
    struct request_set *rs;
    struct evhttp_request *req; /* NULL once evhttp has freed it */
    struct http_conn *conn;     /* its connection; NULL once gone */
    int refused;                /* the framer refused it: 400 or 413 (http_framer.h) */
    struct script_state *ss;
    lua_State *co;
    int co_ref;
    int req_ref; /* registry reference to the request table */
    int fd;
    char route[128]; /* the route pattern, once a failure needs it */
    char id[REQUEST_ID_MAX + 1];
    const char *method;
    double started;
    double deadline;
    struct event deadline_ev; /* assigned in place: no allocation per request */
    int deadline_armed;
    void (*cleanup)(void *data); /* cancels the pending operation */
    void *pending;
    int timed_out;
    int task;       /* a background task (CLI command, steeple.spawn): no HTTP */
    int *exit_code; /* where a CLI task's result goes, or NULL */
    double db_deadline; /* monotonic seconds, 0 = none: see request_db_time_left */
    LIST_ENTRY(request) link; /* in rs->live */
};

struct host *request_host(const struct request *r) { return r->rs->host; }

void request_set_db_deadline(struct request *r, double seconds)
{
    r->db_deadline = seconds > 0 ? clock_mono() + seconds : 0;
}

double request_db_time_left(const struct request *r)
{
    return r->db_deadline > 0 ? r->db_deadline - clock_mono() : INFINITY;
}
const char *request_id(const struct request *r) { return r->id; }

/* ---- life cycle ---------------------------------------------------------- */

void request_set_init(struct request_set *rs, struct host *h)
{
    memset(rs, 0, sizeof *rs);
    rs->host = h;
    LIST_INIT(&rs->live);
}

int request_set_idle(const struct request_set *rs)
{
    return rs->nlive == 0 && rs->writing <= 0;
}

static void ended(struct request_set *rs)
{
    if (rs->on_idle)
        rs->on_idle(rs->idle_arg);
}

static void link_live(struct request_set *rs, struct request *r)
{
    r->rs = rs;
    LIST_INSERT_HEAD(&rs->live, r, link);
    rs->nlive++;
}

static void unlink_live(struct request_set *rs, struct request *r)
{
    LIST_REMOVE(r, link);
    rs->nlive--;
}

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct request *r = request_running(L);
    if (r == NULL || clock_mono() < r->deadline)
        return;
    r->timed_out = 1;
    /* a line hook fires again at once, so a pcall cannot swallow the kill */
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
    luaL_error(L, "request deadline exceeded");
}

void request_overrun(void *co)
{
    /* on the watchdog thread, while the loop thread runs co: lua_sethook is
     * the one call Lua allows from outside the running thread */
    lua_sethook(co, deadline_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
}

/* Keeps a coroutine that returned normally for the next request. */
static void keep_thread(struct request *r)
{
    struct script_state *ss = r->ss;
    if (ss->nidle >= SCRIPT_IDLE_THREADS || lua_status(r->co) != LUA_OK)
        return;
    lua_settop(r->co, 0);
    lua_sethook(r->co, NULL, 0, 0); /* in case the watchdog armed it late */
    ss->idle[ss->nidle] = r->co;
    ss->idle_ref[ss->nidle] = r->co_ref;
    ss->nidle++;
    r->co = NULL;
    r->co_ref = LUA_NOREF;
}

/* Releases everything the request holds. `reset` closes the coroutine's
 * pending to-be-closed variables (it did not return normally). */
static void request_end(struct request *r, int reset)
{
    struct request_set *rs = r->rs;
    if (r->deadline_armed)
        event_del(&r->deadline_ev);
    if (r->conn)
        http_conn_watch(r->conn, NULL, NULL);
    if (!r->task)
        conn_guard_idle(rs->guard, r->fd);
    if (r->co != NULL && reset)
        lua_resetthread(r->co);
    else if (r->co != NULL)
        keep_thread(r);
    if (r->co_ref != LUA_NOREF)
        luaL_unref(r->ss->L, LUA_REGISTRYINDEX, r->co_ref);
    luaL_unref(r->ss->L, LUA_REGISTRYINDEX, r->req_ref);
    unlink_live(rs, r);
    script_state_unref(r->ss);
    free(r);
    ended(rs);
}

/* Cancels whatever the request waits on (client gone, deadline, shutdown). */
static void cancel_pending(struct request *r)
{
    void (*cleanup)(void *) = r->cleanup;
    r->cleanup = NULL;
    if (cleanup)
        cleanup(r->pending);
    r->pending = NULL;
}

/* ---- answering ----------------------------------------------------------- */

static void access_log(const struct request *r, int status, const char *route,
                       const char *tenant, double seconds)
{
    if (!log_enabled(LOG_INFO))
        return;
    struct log_line l;
    log_begin(&l, LOG_INFO, "request");
    log_str(&l, "requestId", r->id);
    log_str(&l, "method", r->method);
    log_str(&l, "route", route);
    log_int(&l, "status", status);
    log_millis(&l, "durationMs", seconds);
    log_str(&l, "tenant", tenant);
    log_end(&l, LOG_INFO);
}

/* The requests_total series of (route, status), remembered per process so the
 * hot path formats no labels. A direct-mapped cache: a collision recomputes. */
static int requests_series(const char *route, int status)
{
    static struct {
        int status, series;
        char route[96];
    } cache[256];
    uint32_t h = 2166136261u ^ (uint32_t)status;
    for (const unsigned char *c = (const unsigned char *)route; *c; c++)
        h = (h ^ *c) * 16777619u;
    size_t i = h & 255;
    if (cache[i].status == status && strcmp(cache[i].route, route) == 0)
        return cache[i].series;
    char esc[160], labels[METRICS_LABELS_LEN];
    metrics_escape_label(esc, sizeof esc, route);
    snprintf(labels, sizeof labels, "route=\"%s\",status=\"%d\"", esc, status);
    int series = metrics_series("steeple_http_requests_total", "", labels, METRIC_COUNTER);
    if (strlen(route) < sizeof cache[i].route && series >= 0) {
        cache[i].status = status;
        cache[i].series = series;
        strcpy(cache[i].route, route);
    }
    return series;
}

static void record(struct request *r, int status, const char *route, const char *tenant)
{
    if (r->task)
        return;
    double seconds = clock_mono() - r->started;
    metrics_add(requests_series(route, status), 1);
    metrics_observe(&r->rs->seconds, seconds);
    access_log(r, status, route, tenant, seconds);
}

/* evhttp finished writing a response: the connection's next request may be
 * read (http_conns_answered also ends the watch of on_write_broken). */
static void on_reply_written(struct evhttp_request *req, void *arg)
{
    struct request_set *rs = arg;
    rs->writing--;
    http_conns_answered(rs->conns, req);
    ended(rs);
}

/* The connection closed while its response was being written (the client
 * went away): evhttp frees the request without calling on_reply_written, so
 * the response counts as written here, or a stopping worker would wait for
 * its shutdown timeout. */
static void on_write_broken(void *arg)
{
    struct request_set *rs = arg;
    rs->writing--;
    ended(rs);
}

static void on_plain_written(struct evhttp_request *req, void *arg)
{
    struct request_set *rs = arg;
    http_conns_answered(rs->conns, req);
}

/* Sends a response if the client is still there, then ends the request. */
static void respond(struct request *r, const struct http_reply *reply, int reset)
{
    struct request_set *rs = r->rs;
    struct http_conn *writing_on = NULL;
    if (r->req != NULL) {
        if (r->conn)
            http_conn_watch(r->conn, NULL, NULL);
        evhttp_request_set_on_complete_cb(r->req, on_reply_written, rs);
        rs->writing++;
        writing_on = r->conn;
        /* a refused request's body was not read: the connection must close */
        if (http_reply_send(r->req, reply, r->id, rs->host->stopping || r->refused) != 0)
            log_msg(LOG_ERROR, r->id, "could not build the response");
        r->req = NULL; /* evhttp owns it again */
    }
    record(r, reply->status, reply->route ? reply->route : "unmatched", reply->tenant);
    request_end(r, reset);
    /* after request_end, which stops the request's own watch: evhttp writes
     * later, from the loop, so on_reply_written has not run yet */
    if (writing_on)
        http_conn_watch(writing_on, on_write_broken, rs);
}

static void respond_error(struct request *r, int status, const char *code, int reset)
{
    struct http_reply reply;
    http_reply_error(&reply, status, code, r->id);
    reply.route = r->route[0] ? r->route : "unmatched";
    respond(r, &reply, reset);
}

/* ---- errors -------------------------------------------------------------- */

/* Under pcall on the main state: pushes the traceback of the failed coroutine. */
static int traceback_of(lua_State *L)
{
    struct request *r = lua_touserdata(L, 1);
    const char *msg = lua_tostring(r->co, -1);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(r->co, -1));
    luaL_traceback(L, r->co, msg, 0);
    return 1;
}

/* Under pcall on the main state: copies req.route (set by app.lua once the
 * route is known) into r->route. */
static int route_of(lua_State *L)
{
    struct request *r = lua_touserdata(L, 1);
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, r->req_ref) == LUA_TTABLE &&
        lua_getfield(L, -1, "route") == LUA_TSTRING)
        snprintf(r->route, sizeof r->route, "%s", lua_tostring(L, -1));
    return 0;
}

/* The route of a request that did not return normally, or "unmatched". */
static const char *remember_route(struct request *r)
{
    lua_State *L = r->ss->L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, route_of);
    lua_pushlightuserdata(L, r);
    lua_pcall(L, 1, 0, 0); /* on failure the route stays unknown */
    lua_settop(L, top);
    return r->route[0] ? r->route : "unmatched";
}

static void fail(struct request *r, const char *why)
{
    lua_State *L = r->ss->L;
    const char *trace = why;
    int top = lua_gettop(L);
    if (why == NULL) {
        lua_pushcfunction(L, traceback_of);
        lua_pushlightuserdata(L, r);
        trace = lua_pcall(L, 1, 1, 0) == LUA_OK ? lua_tostring(L, -1) : NULL;
        if (trace == NULL)
            trace = "(no traceback: out of memory)";
    }
    const char *route = remember_route(r);
    struct log_line l;
    log_begin(&l, LOG_ERROR, r->timed_out ? "request deadline exceeded"
                             : r->task            ? "task failed"
                                                  : "handler failed");
    log_str(&l, "requestId", r->id);
    log_str(&l, "route", route);
    log_str(&l, "error", trace);
    log_end(&l, LOG_ERROR);
    lua_settop(L, top);
    if (r->task) {
        if (r->exit_code)
            *r->exit_code = 1;
        request_end(r, 1);
        return;
    }
    if (r->timed_out)
        respond_error(r, 503, "service_unavailable", 1);
    else
        respond_error(r, 500, "internal_error", 1);
}

/* ---- the coroutine ------------------------------------------------------- */

/* Optional string result i of n at base: NULL when absent or nil. Returns -1
 * when present but not a string. No call here allocates or raises. */
static int opt_string(lua_State *co, int base, int n, int i, const char **s, size_t *len)
{
    *s = NULL;
    *len = 0;
    if (i >= n || lua_type(co, base + i) == LUA_TNIL)
        return 0;
    if (lua_type(co, base + i) != LUA_TSTRING)
        return -1;
    *s = lua_tolstring(co, base + i, len);
    return 0;
}

/* Reads app.handle's results: status, body, headers, route, tenant. Returns
 * NULL, or what is wrong with them. */
static const char *reply_from_lua(struct http_reply *reply, lua_State *co, int base, int n)
{
    size_t unused;
    int isnum = 0;
    memset(reply, 0, sizeof *reply);
    lua_Integer status = n > 0 ? lua_tointegerx(co, base, &isnum) : 0;
    if (!isnum || status < 100 || status > 599)
        return "handler returned no valid status (an integer 100-599)";
    reply->status = (int)status;
    if (opt_string(co, base, n, 1, &reply->body, &reply->body_len) != 0)
        return "handler returned a non-string body";
    if (opt_string(co, base, n, 2, &reply->headers, &reply->headers_len) != 0)
        return "handler returned headers that are not a string";
    if (reply->headers) {
        const char *bad = http_headers_check(reply->headers, reply->headers_len);
        if (bad)
            return bad;
    }
    if (opt_string(co, base, n, 3, &reply->route, &unused) != 0 ||
        opt_string(co, base, n, 4, &reply->tenant, &unused) != 0)
        return "handler returned a route or tenant that is not a string";
    return NULL;
}

static void finish(struct request *r, int nres)
{
    lua_State *co = r->co;
    int base = lua_gettop(co) - nres + 1;
    if (r->task) {
        if (r->exit_code)
            *r->exit_code = nres > 0 && lua_isinteger(co, base) ? (int)lua_tointeger(co, base) : 0;
        request_end(r, 0);
        return;
    }
    struct http_reply reply;
    const char *bad = reply_from_lua(&reply, co, base, nres);
    if (bad != NULL) {
        fail(r, bad);
        return;
    }
    respond(r, &reply, 0);
}

static void step(struct request *r, int status, int nres)
{
    switch (status) {
    case LUA_YIELD:
        if (r->cleanup != NULL)
            return; /* parked on an operation */
        fail(r, "handler yielded outside a steeple call");
        return;
    case LUA_OK:
        finish(r, nres);
        return;
    default:
        fail(r, NULL);
        return;
    }
}

static void run(struct request *r, int nargs)
{
    struct request_set *rs = r->rs;
    struct request *outer = rs->running; /* set when resumed from another's call */
    int nres = 0;
    rs->running = r;
    watchdog_enter(rs->watchdog, r->co, r->deadline);
    int status = lua_resume(r->co, r->ss->L, nargs, &nres);
    watchdog_leave(rs->watchdog);
    rs->running = outer;
    if (outer)
        watchdog_enter(rs->watchdog, outer->co, outer->deadline);
    /* the handler may have held the loop: timeouts set from now on (the
     * response's write timeout) must not start from a stale cached time */
    event_base_update_cache_time(rs->host->base);
    step(r, status, nres);
}

struct resume_args {
    request_retval_fn retval;
    void *data;
};

static int push_results(lua_State *L)
{
    struct resume_args *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    return a->retval(L, a->data);
}

void request_resume(struct request *r, request_retval_fn retval, void *data)
{
    lua_State *L = r->ss->L;
    struct resume_args a = {retval, data};
    r->cleanup = NULL;
    r->pending = NULL;
    int top = lua_gettop(L);
    lua_pushcfunction(L, push_results);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
        lua_settop(L, top);
        fail(r, "could not pass results back to the handler (out of memory)");
        return;
    }
    int n = lua_gettop(L) - top;
    if (!lua_checkstack(r->co, n)) {
        lua_settop(L, top);
        fail(r, "could not pass results back to the handler (stack)");
        return;
    }
    lua_xmove(L, r->co, n);
    run(r, n);
}

void request_suspend(struct request *r, void (*cleanup)(void *data), void *data)
{
    r->cleanup = cleanup;
    r->pending = data;
}

struct request *request_running(lua_State *L)
{
    struct host *h = script_host(L);
    return h && h->requests ? h->requests->running : NULL;
}

struct request *request_check(lua_State *L, const char *what)
{
    struct request *r = request_running(L);
    if (r == NULL || r->co != L || !lua_isyieldable(L))
        luaL_error(L, "%s: API disabled in this context", what);
    return r;
}

/* ---- building the request table (under pcall on the main state) ----------- */

static void push_headers(lua_State *L, struct evkeyvalq *headers)
{
    char name[256];
    int n = 0;
    for (struct evkeyval *h = headers->tqh_first; h; h = h->next.tqe_next)
        n++;
    lua_createtable(L, 0, n); /* headers */
    for (struct evkeyval *h = headers->tqh_first; h; h = h->next.tqe_next) {
        size_t len = strlen(h->key);
        if (len >= sizeof name)
            continue; /* longer than any header we read */
        for (size_t i = 0; i < len; i++)
            name[i] = (char)tolower((unsigned char)h->key[i]);
        lua_pushlstring(L, name, len);         /* headers name */
        if (lua_rawget(L, -2) == LUA_TSTRING) { /* headers old */
            lua_pushliteral(L, ", ");
            lua_pushstring(L, h->value);
            lua_concat(L, 3); /* headers joined */
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, h->value); /* headers value */
        }
        lua_pushlstring(L, name, len);
        lua_insert(L, -2);  /* headers name value */
        lua_rawset(L, -3);  /* headers */
    }
}

static void push_request_table(lua_State *L, struct request *r)
{
    struct evhttp_request *req = r->req;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(uri);
    const char *query = evhttp_uri_get_query(uri);
    struct evbuffer *body = http_conn_body(r->conn);
    size_t blen = evbuffer_get_length(body);
    char *host = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &host, &port);

    lua_createtable(L, 0, 12); /* room for what app.lua adds */
    lua_pushstring(L, r->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, path && *path ? path : "/");
    lua_setfield(L, -2, "path");
    lua_pushstring(L, query ? query : "");
    lua_setfield(L, -2, "query");
    lua_pushstring(L, host ? host : "");
    lua_setfield(L, -2, "remote");
    push_headers(L, evhttp_request_get_input_headers(req));
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, blen ? (const char *)evbuffer_pullup(body, -1) : "", blen);
    lua_setfield(L, -2, "body");
    evbuffer_drain(body, blen); /* Lua has its copy */
    if (r->refused == 413) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "body_too_large"); /* app.lua answers 413 once routed */
    }
}

/* Sets up the coroutine, reusing a finished one when the state has one:
 * [handler, request table] on its stack. */
static int prepare(lua_State *L)
{
    struct request *r = lua_touserdata(L, 1);
    struct script_state *ss = r->ss;
    if (ss->nidle > 0) {
        ss->nidle--;
        r->co = ss->idle[ss->nidle];
        r->co_ref = ss->idle_ref[ss->nidle];
    } else {
        lua_State *co = lua_newthread(L);           /* r co */
        r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* r */
        r->co = co;
    }
    lua_State *co = r->co;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ss->handler_ref); /* r handler */
    push_request_table(L, r);                              /* r handler req */
    lua_pushvalue(L, -1);                                  /* r handler req req */
    r->req_ref = luaL_ref(L, LUA_REGISTRYINDEX);           /* r handler req */
    lua_xmove(L, co, 2);                                   /* r */
    return 0;
}

/* ---- evhttp callbacks ---------------------------------------------------- */

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct request *r = arg;
    r->deadline_armed = 0;
    r->timed_out = 1;
    cancel_pending(r);
    if (r->task) { /* a bounded task (request_spawn_until): its bound is its contract */
        log_msg(LOG_WARN, r->id, "task ended at its deadline");
        if (r->exit_code)
            *r->exit_code = 1;
        request_end(r, 1);
        return;
    }
    fail(r, "the handler was still waiting at the request deadline");
}

/* Arms r's deadline timer (on_deadline) to fire after tv. Returns 0, or -1. */
static int arm_deadline(struct event_base *base, struct request *r, const struct timeval *tv)
{
    if (evtimer_assign(&r->deadline_ev, base, on_deadline, r) != 0 || evtimer_add(&r->deadline_ev, tv) != 0)
        return -1;
    r->deadline_armed = 1;
    return 0;
}

static void on_client_close(void *arg)
{
    struct request *r = arg;
    r->req = NULL; /* evhttp frees it */
    r->conn = NULL;
    cancel_pending(r);
    log_msg(LOG_INFO, r->id, "client closed the connection before the response");
    record(r, 499, remember_route(r), NULL);
    request_end(r, 1);
}

/* Makes r an in-flight request of the current scripts, with no coroutine yet. */
static void begin(struct request *r)
{
    r->ss = r->rs->host->scripts;
    script_state_ref(r->ss);
    r->co_ref = LUA_NOREF;
    r->req_ref = LUA_NOREF;
    link_live(r->rs, r);
}

static int start(struct request *r)
{
    struct request_set *rs = r->rs;
    begin(r);
    r->deadline = r->started + rs->host->cfg.limits.request_timeout_s;
    if (arm_deadline(rs->host->base, r, rs->timeout_tv) != 0)
        return -1;
    http_conn_watch(r->conn, on_client_close, r);
    lua_State *L = r->ss->L;
    lua_pushcfunction(L, prepare);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        log_msg(LOG_ERROR, r->id, "could not start the handler: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* Answers at once, without running the scripts. */
static void answer_now(struct request *r, int status, const char *code)
{
    begin(r);
    respond_error(r, status, code, 0);
}

void request_handle(struct evhttp_request *req, void *arg)
{
    struct request_set *rs = arg;
    const struct config *cfg = &rs->host->cfg;
    struct http_conn *conn = http_conns_find(rs->conns, req);
    evhttp_request_set_on_complete_cb(req, on_plain_written, rs);
    if (cfg->plain_path[0] && conn && !http_conn_refused(conn) &&
        http_plain_route(req, cfg->plain_path))
        return;
    struct request *r = calloc(1, sizeof *r);
    if (r == NULL) {
        evhttp_send_error(req, 503, "Service Unavailable");
        return;
    }
    r->rs = rs;
    r->req = req;
    r->conn = conn;
    r->refused = conn ? http_conn_refused(conn) : 0;
    r->fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evhttp_request_get_connection(req)));
    r->started = clock_mono();
    r->method = http_method_name(evhttp_request_get_command(req));
    http_request_id(req, r->id);
    conn_guard_busy(rs->guard, r->fd);
    if (conn == NULL) { /* out of memory when it was accepted: not read by a framer */
        answer_now(r, 503, "service_unavailable");
        return;
    }
    if (r->refused == 400) {
        log_msg(LOG_INFO, r->id, "refused a request: %s", http_conn_why(conn));
        answer_now(r, 400, "bad_request");
        return;
    }
    if (start(r) != 0) {
        respond_error(r, 500, "internal_error", 1);
        return;
    }
    run(r, 1);
}

/* Under pcall on the main state: [fn, args...] from the stack of L into a
 * fresh coroutine; L keeps nothing. */
static int prepare_task(lua_State *L)
{
    struct request *r = lua_touserdata(L, 1);
    int n = lua_gettop(L) - 1; /* fn and its arguments */
    lua_State *co = lua_newthread(L);
    lua_insert(L, 2);                           /* r co fn args... */
    lua_xmove(L, co, n);                        /* r co */
    r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* r */
    r->co = co;
    return 0;
}

static void start_cancel(void *data)
{
    event_free(data);
}

static void on_task_start(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct request *r = arg;
    event_free(r->pending);
    r->cleanup = NULL;
    r->pending = NULL;
    run(r, lua_gettop(r->co) - 1);
}

/* Starts task r's clock: its deadline is `seconds` from now when that is a
 * positive finite number, else there is none. Returns 0, or -1 if the timer
 * could not be armed. */
static int start_task_clock(struct event_base *base, struct request *r, double seconds)
{
    r->started = clock_mono();
    r->deadline = INFINITY;
    if (!(seconds > 0) || !isfinite(seconds))
        return 0;
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
    if (arm_deadline(base, r, &tv) != 0)
        return -1;
    r->deadline = r->started + seconds;
    return 0;
}

int request_spawn(struct request_set *rs, lua_State *from, int nargs, int *exit_code)
{
    return request_spawn_until(rs, from, nargs, exit_code, INFINITY);
}

int request_spawn_until(struct request_set *rs, lua_State *from, int nargs, int *exit_code,
                        double seconds)
{
    /* a task runs on the script state of whoever starts it */
    struct script_state *ss = rs->running ? rs->running->ss : rs->host->scripts;
    struct request *r = calloc(1, sizeof *r);
    struct event *start_ev = r ? event_new(rs->host->base, -1, 0, on_task_start, r) : NULL;
    if (start_ev == NULL || start_task_clock(rs->host->base, r, seconds) != 0) {
        if (start_ev)
            event_free(start_ev);
        free(r);
        return -1;
    }
    r->task = 1;
    r->exit_code = exit_code;
    r->fd = -1;
    r->method = "TASK";
    r->co_ref = LUA_NOREF;
    r->req_ref = LUA_NOREF;
    http_request_id(NULL, r->id);
    r->ss = ss;
    script_state_ref(r->ss);
    link_live(rs, r);
    lua_State *L = r->ss->L;
    lua_pushcfunction(L, prepare_task);
    lua_pushlightuserdata(L, r);
    lua_xmove(from, L, nargs + 1); /* fn and args, from the caller's stack */
    if (lua_pcall(L, nargs + 2, 0, 0) != LUA_OK) {
        log_msg(LOG_ERROR, r->id, "could not start a task: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        event_free(start_ev);
        if (exit_code)
            *exit_code = 1;
        request_end(r, 0);
        return -1;
    }
    /* never run inside the caller: it may be a running coroutine */
    request_suspend(r, start_cancel, start_ev);
    struct timeval now = {0, 0};
    event_add(start_ev, &now);
    return 0;
}

void request_abort_all(struct request_set *rs)
{
    while (!LIST_EMPTY(&rs->live)) {
        struct request *r = LIST_FIRST(&rs->live);
        cancel_pending(r);
        log_msg(LOG_WARN, r->id, "request cut short by shutdown");
        respond_error(r, 503, "service_unavailable", 1);
    }
}
