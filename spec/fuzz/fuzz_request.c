/* fuzz_request.c — raw HTTP into the worker: evhttp, the request -> Lua bridge
 * (core/request.c, core/lua_host.c) and the application's router and routes.
 *
 * An in-process worker shell built like worker_main's (core/worker.c): an
 * event_base, an evhttp with the worker's allowed methods, limits, bevcb (the
 * framer's connections, core/http_conn.c) and generic callback, a conn_guard, a thread pool, a watchdog, a database
 * cluster whose only server refuses connections (127.0.0.1:1: every query is
 * "unavailable", 503), a spool, and the real script state (lua/app.lua and all
 * routes), listening on 127.0.0.1 (an ephemeral port). Each input is written
 * as raw bytes over a fresh TCP connection to it (libevent 2.1 keeps
 * evhttp_get_request private, so the real accept path is used: listener,
 * bevcb, conn_guard_accepted). The loop runs until the server closes, or
 * nothing is in flight and nothing more comes; then the client resets the
 * connection (SO_LINGER 0: no TIME_WAIT pile-up) and the loop runs on.
 *
 * The generic callback notes evhttp's parse of each request and calls the
 * real request_handle. app.handle is wrapped (its registry reference in the
 * script state is swapped for a Lua function calling before(req), then the
 * real handler, then after(results...)):
 *   - before() checks the request table request.c built against evhttp's
 *     parse: method, path ("/" for an empty one), query ("" when none),
 *     remote, id (a valid X-Request-Id echoed, else a fresh 24-hex one), body
 *     bytes (the framer's decoded body: evhttp never reads one), and headers: names lower-cased, repeated ones joined with ", ",
 *     names of 256+ bytes dropped, nothing else added or changed;
 *   - after() checks app.handle's results against request.c's contract
 *     (integer status 100-599, string-or-nil body, header lines that
 *     http_headers_check accepts, string-or-nil route and tenant) and the
 *     router against an independent matcher over app.router:routes(): a
 *     route it names matches the path segment by segment and has the
 *     method (HEAD as GET); a path no pattern matches gets 404 and no
 *     route; a path matched only under other methods gets 405 with Allow.
 * On the client side every response is parsed: a valid status line, header
 * lines and a complete blank line; one response per handled request at
 * least (then maybe one of evhttp's own errors; 1xx interim ones aside), each
 * handled one carrying X-Request-Id. At the end no request may be left in flight, and no status
 * may be 500 (FUZZ_ALLOW_500=1 relaxes that) — with the database down,
 * every route must still answer cleanly (4xx or 503).
 *
 * Not covered: TLS, conn_guard's cap and reaper (limits far away), the
 * master process and SO_REUSEPORT between workers, timeouts that need wall time (read timeout, request
 * deadline), and anything behind a working database. */
#include "conn_guard.h"
#include "db_config.h"
#include "fuzz_app.h"
#include "http_conn.h"
#include "http_reply.h"
#include "metrics.h"
#include "pg_pool.h"
#include "request.h"
#include "spool.h"
#include "threadpool.h"
#include "watchdog.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sodium.h>
#include <time.h>

#define MAX_HANDLED 64
#define MAX_ROUTES 64

static struct worker w;
static struct sockaddr_in server; /* where the worker's evhttp listens */
static struct evhttp_request *current; /* the request request_handle is starting */
static struct evbuffer *current_body;   /* a copy of its body, as the framer decoded it */
static int handled, checked, status_500;
static char handled_method[MAX_HANDLED][8];

static struct {
    char pattern[128];
    char methods[128]; /* " GET POST " */
} routes[MAX_ROUTES];
static int nroutes;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- evhttp's view ------------------------------------------------------- */

static const char *method_of(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return NULL; /* not allowed by the worker: never reaches the callback */
    }
}

/* The string field `key` of the table at idx, or fails. */
static const char *field(lua_State *L, int idx, const char *key, size_t *len)
{
    if (lua_getfield(L, idx, key) != LUA_TSTRING)
        fuzz_fail("req.%s is a %s, not a string", key, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* the table keeps it */
    return s;
}

static void same(const char *what, const char *got, size_t glen, const char *want, size_t wlen)
{
    FUZZ_CHECK(glen == wlen && memcmp(got, want, wlen) == 0,
               "req.%s is \"%.*s\" (%zu bytes) but evhttp parsed \"%.*s\" (%zu bytes)", what,
               (int)(glen > 200 ? 200 : glen), got, glen, (int)(wlen > 200 ? 200 : wlen), want,
               wlen);
}

static void lower_name(char *out, const char *key, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)key[i]);
    out[n] = '\0';
}

/* headers (the table at idx) against evhttp's input headers. */
static void check_headers(lua_State *L, int idx, struct evkeyvalq *hs)
{
    int distinct = 0;
    char name[256], other[256];
    for (struct evkeyval *h = hs->tqh_first; h; h = h->next.tqe_next) {
        size_t n = strlen(h->key);
        if (n >= sizeof name)
            continue;
        lower_name(name, h->key, n);
        int first = 1; /* is this the first header of that name? */
        for (struct evkeyval *e = hs->tqh_first; e != h; e = e->next.tqe_next)
            if (strlen(e->key) == n && (lower_name(other, e->key, n), strcmp(other, name) == 0))
                first = 0;
        if (!first)
            continue;
        distinct++;
        luaL_Buffer b; /* the values of every header of that name, in order */
        luaL_buffinit(L, &b);
        int k = 0;
        for (struct evkeyval *e = h; e; e = e->next.tqe_next) {
            if (strlen(e->key) != n || (lower_name(other, e->key, n), strcmp(other, name) != 0))
                continue;
            if (k++)
                luaL_addstring(&b, ", ");
            luaL_addstring(&b, e->value);
        }
        luaL_pushresult(&b); /* want */
        lua_pushlstring(L, name, n);
        if (lua_rawget(L, idx) != LUA_TSTRING)
            fuzz_fail("req.headers[\"%s\"] is missing", name);
        size_t glen, wlen;
        const char *got = lua_tolstring(L, -1, &glen), *want = lua_tolstring(L, -2, &wlen);
        char what[300];
        snprintf(what, sizeof what, "headers[\"%s\"]", name);
        same(what, got, glen, want, wlen);
        lua_pop(L, 2);
    }
    int keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        FUZZ_CHECK(lua_type(L, -2) == LUA_TSTRING, "req.headers has a non-string key");
        keys++;
        lua_pop(L, 1);
    }
    FUZZ_CHECK(keys == distinct, "req.headers has %d names, evhttp parsed %d", keys, distinct);
}

/* before(req): the request table request.c built, against evhttp's parse. */
static int before(lua_State *L)
{
    struct evhttp_request *req = current;
    FUZZ_CHECK(req != NULL, "app.handle ran outside request_handle");
    checked++;
    /* coroutines taken back from the idle list lost the coverage hook */
    lua_sethook(L, fuzz_lua_hook, LUA_MASKLINE, 0);
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t len;
    const char *s = field(L, 1, "method", &len);
    const char *m = method_of(evhttp_request_get_command(req));
    same("method", s, len, m ? m : "?", m ? strlen(m) : 1);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(uri), *query = evhttp_uri_get_query(uri);
    if (path == NULL || *path == '\0')
        path = "/";
    if (query == NULL)
        query = "";
    s = field(L, 1, "path", &len);
    same("path", s, len, path, strlen(path));
    s = field(L, 1, "query", &len);
    same("query", s, len, query, strlen(query));
    s = field(L, 1, "remote", &len);
    same("remote", s, len, "127.0.0.1", 9);

    const char *given = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    s = field(L, 1, "id", &len);
    if (given && http_request_id_valid(given)) {
        same("id", s, len, given, strlen(given));
    } else {
        FUZZ_CHECK(len == 24, "a fresh request id of %zu bytes", len);
        for (size_t i = 0; i < len; i++)
            FUZZ_CHECK(isxdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i]),
                       "request id \"%s\"", s);
    }

    FUZZ_CHECK(evbuffer_get_length(evhttp_request_get_input_buffer(req)) == 0,
               "evhttp read a body itself");
    size_t blen = evbuffer_get_length(current_body);
    s = field(L, 1, "body", &len);
    same("body", s, len, blen ? (const char *)evbuffer_pullup(current_body, -1) : "", blen);

    if (lua_getfield(L, 1, "headers") != LUA_TTABLE)
        fuzz_fail("req.headers is not a table");
    check_headers(L, lua_gettop(L), evhttp_request_get_input_headers(req));
    lua_settop(L, 1);
    return 0;
}

/* ---- the router, independently ------------------------------------------- */

/* Does pattern match path segment by segment ({x} = one non-empty segment)? */
static int pattern_matches(const char *pattern, const char *path, size_t plen)
{
    const char *p = pattern, *q = path, *qend = path + plen;
    if (*p != '/' || plen == 0 || *q != '/')
        return 0;
    if (strcmp(pattern, "/") == 0)
        return plen == 1;
    while (*p) {
        p++, q++; /* past the slashes */
        const char *pe = strchr(p, '/');
        size_t pn = pe ? (size_t)(pe - p) : strlen(p);
        const char *qe = q <= qend ? memchr(q, '/', (size_t)(qend - q)) : NULL;
        if (q > qend)
            return 0;
        size_t qn = qe ? (size_t)(qe - q) : (size_t)(qend - q);
        if (p[0] == '{') {
            if (qn == 0)
                return 0;
        } else if (pn != qn || memcmp(p, q, pn) != 0) {
            return 0;
        }
        p += pn;
        q += qn;
        if ((*p == '\0') != (q == qend))
            return 0;
    }
    return q == qend;
}

static int route_has(int i, const char *method)
{
    char word[16];
    snprintf(word, sizeof word, " %s ", method);
    return strstr(routes[i].methods, word) != NULL;
}

/* after(status, body, headers, route, tenant): returns them unchanged. */
static int after(lua_State *L)
{
    int n = lua_gettop(L);
    struct evhttp_request *req = current; /* NULL when the handler yielded first */
    int isnum = 0;
    lua_Integer status = n >= 1 ? lua_tointegerx(L, 1, &isnum) : 0;
    FUZZ_CHECK(isnum && status >= 100 && status <= 599, "app.handle returned no valid status");
    for (int i = 2; i <= 5; i++)
        FUZZ_CHECK(i > n || lua_isnil(L, i) || lua_type(L, i) == LUA_TSTRING,
                   "app.handle result %d is a %s", i, luaL_typename(L, i));
    if (n >= 3 && lua_type(L, 3) == LUA_TSTRING) {
        size_t hlen;
        const char *h = lua_tolstring(L, 3, &hlen);
        const char *bad = http_headers_check(h, hlen);
        FUZZ_CHECK(bad == NULL, "app.handle returned bad header lines (%s): %.*s", bad, (int)hlen,
                   h);
    }
    if (status == 500) {
        status_500++;
        FUZZ_CHECK(getenv("FUZZ_ALLOW_500") != NULL,
                   "status 500 (see the log line above for the handler's error)");
    }
    if (req == NULL || nroutes == 0)
        return n;

    const char *m = method_of(evhttp_request_get_command(req));
    const char *method = m && strcmp(m, "HEAD") == 0 ? "GET" : m ? m : "?";
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(uri);
    if (path == NULL || *path == '\0')
        path = "/";
    size_t plen = strlen(path);
    int any = 0, with_method = 0;
    for (int i = 0; i < nroutes; i++)
        if (pattern_matches(routes[i].pattern, path, plen)) {
            any = 1;
            with_method |= route_has(i, method);
        }
    const char *route = n >= 4 && lua_type(L, 4) == LUA_TSTRING ? lua_tostring(L, 4) : NULL;
    if (route != NULL) {
        int i = 0;
        while (i < nroutes && strcmp(routes[i].pattern, route) != 0)
            i++;
        FUZZ_CHECK(i < nroutes, "route \"%s\" is not registered", route);
        FUZZ_CHECK(pattern_matches(route, path, plen), "route %s for path %s", route, path);
        FUZZ_CHECK(route_has(i, method), "route %s has no %s", route, method);
    } else if (!any) {
        FUZZ_CHECK(status == 404, "no pattern matches %s, yet status %d", path, (int)status);
    } else if (!with_method) {
        FUZZ_CHECK(status == 405, "%s %s matches no route's methods, yet status %d", method,
                   path, (int)status);
        const char *h = n >= 3 && lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3) : "";
        FUZZ_CHECK(strstr(h, "Allow: ") != NULL || strstr(h, "allow: ") != NULL,
                   "405 without Allow");
    } else {
        fuzz_fail("%s %s has a route, yet app.handle named none (status %d)", method, path,
                  (int)status);
    }
    return n;
}

static const char wrapper[] =
    "local orig, before, after = ...\n"
    "return function(req)\n"
    "  before(req)\n"
    "  return after(orig(req))\n"
    "end\n";

/* Swaps app.handle for the wrapper, and lists the routes. */
static void wrap_handler(struct script_state *ss)
{
    lua_State *L = ss->L;
    if (luaL_loadbuffer(L, wrapper, sizeof wrapper - 1, "=fuzz_request") != LUA_OK)
        abort();
    lua_rawgeti(L, LUA_REGISTRYINDEX, ss->handler_ref);
    lua_pushcfunction(L, before);
    lua_pushcfunction(L, after);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK)
        abort();
    luaL_unref(L, LUA_REGISTRYINDEX, ss->handler_ref);
    ss->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    fuzz_app_chunk(L,
                   "local r = require('app').router:routes()\n"
                   "local out = {}\n"
                   "for i, x in ipairs(r) do\n"
                   "  out[i] = { x.pattern, ' ' .. table.concat(x.methods, ' ') .. ' ' }\n"
                   "end\n"
                   "return out\n",
                   "=fuzz_routes");
    nroutes = (int)lua_rawlen(L, -1);
    FUZZ_CHECK(nroutes > 0 && nroutes <= MAX_ROUTES, "%d routes", nroutes);
    for (int i = 0; i < nroutes; i++) {
        lua_rawgeti(L, -1, i + 1);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        snprintf(routes[i].pattern, sizeof routes[i].pattern, "%s", lua_tostring(L, -2));
        snprintf(routes[i].methods, sizeof routes[i].methods, "%s", lua_tostring(L, -1));
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
}

/* ---- the worker shell ----------------------------------------------------- */

static void on_request(struct evhttp_request *req, void *arg)
{
    const char *m = method_of(evhttp_request_get_command(req));
    if (handled < MAX_HANDLED)
        snprintf(handled_method[handled], sizeof handled_method[0], "%s", m ? m : "?");
    handled++;
    current = req;
    struct http_conn *conn = http_conns_find(w.requests.conns, req);
    evbuffer_drain(current_body, evbuffer_get_length(current_body));
    struct evbuffer *body = conn ? http_conn_body(conn) : NULL;
    size_t blen = body ? evbuffer_get_length(body) : 0;
    if (blen > 0 && evbuffer_add(current_body, evbuffer_pullup(body, -1), blen) != 0)
        abort();
    request_handle(req, arg);
    current = NULL;
}

static struct bufferevent *new_connection(struct event_base *base, void *arg)
{
    struct worker *wk = arg;
    conn_guard_accepted(wk->requests.guard);
    return http_conns_bufferevent(wk->requests.conns);
}

static void apply_limits(void)
{
    const struct config_limits *lim = &w.host.cfg.limits;
    http_conns_set_limits(w.requests.conns, lim->header_bytes, lim->body_bytes);
    evhttp_set_max_body_size(w.http, 0);
    evhttp_set_max_headers_size(w.http, lim->header_bytes);
    evhttp_set_timeout(w.http, (int)(lim->read_timeout_s + 0.999));
    double t = lim->request_timeout_s;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (time_t)t) * 1e6)};
    const struct timeval *common = event_base_init_common_timeout(w.host.base, &tv);
    w.request_timeout_plain = tv;
    w.requests.timeout_tv = common ? common : &w.request_timeout_plain;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    if (metrics_init(1) != 0)
        abort();
    metrics_attach_worker(0);
    http_request_ids_init();
    unsigned char key[32];
    char data_key[64], telnyx_key[64], config[2048];
    memset(key, 7, sizeof key);
    if (sodium_init() < 0)
        abort();
    sodium_bin2base64(data_key, sizeof data_key, key, sizeof key, sodium_base64_VARIANT_ORIGINAL);
    unsigned char pk[32], sk[64];
    crypto_sign_seed_keypair(pk, sk, key);
    sodium_bin2base64(telnyx_key, sizeof telnyx_key, pk, sizeof pk,
                      sodium_base64_VARIANT_ORIGINAL);
    snprintf(config, sizeof config,
             "return {\n"
             "  log = { level = 'error' },\n"
             "  limits = { request_timeout_s = 5, read_timeout_s = 5, body_bytes = 65536,\n"
             "             header_bytes = 8192 },\n"
             "  db = { url = 'postgresql://fuzz@127.0.0.1:1/fuzz', connect_timeout_ms = 200,\n"
             "         acquire_timeout_ms = 200, breaker_open_s = 3600 },\n"
             "  auth = { jwt_secret = 'fuzz-jwt-secret-0123456789abcdef!',\n"
             "           data_key = '%s', argon2_memory_kib = 1024, argon2_iterations = 1,\n"
             "           rate_per_min = 1000000, trusted_proxies = '127.0.0.1, 10.0.0.0/8' },\n"
             "  telnyx = { public_key = '%s' },\n"
             "  spool = { dir = '%s/spool' },\n"
             "}\n",
             data_key, telnyx_key, fuzz_tmpdir());

    w.host.base = event_base_new();
    if (w.host.base == NULL)
        abort();
    struct script_state *ss = fuzz_app_state(&w, config);
    char err[256];
    w.http = evhttp_new(w.host.base);
    w.requests.conns = http_conns_new(w.host.base, ss->cfg.limits.header_bytes, ss->cfg.limits.body_bytes,
                             script_body_limit, &w.host);
    current_body = evbuffer_new();
    if (w.http == NULL || w.requests.conns == NULL || current_body == NULL)
        abort();
    evhttp_set_allowed_methods(w.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                           EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(w.http, on_request, &w.requests);
    evhttp_set_bevcb(w.http, new_connection, &w);
    apply_limits();
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(w.http, "127.0.0.1", 0);
    if (bound == NULL)
        abort();
    w.listener = evhttp_bound_socket_get_listener(bound);
    socklen_t slen = sizeof server;
    getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&server, &slen);
    w.requests.guard = conn_guard_new(w.host.base, w.listener, ntohs(server.sin_port), 1024, 0,
                             w.host.cfg.limits.read_timeout_s);
    w.host.pool = threadpool_new(w.host.base, 1, 16);
    w.requests.watchdog = watchdog_start(0.1, 5.0, request_overrun);
    w.host.cluster = db_cluster_new(w.host.base, &ss->cfg, err, sizeof err);
    w.host.spool = spool_open(w.host.base, ss->cfg.spool_dir, 0, 1, err, sizeof err);
    if (!w.requests.guard || !w.host.pool || !w.requests.watchdog || !w.host.cluster || !w.host.spool) {
        fprintf(stderr, "fuzz_request: cannot build the worker: %s\n", err);
        abort();
    }
    wrap_handler(ss);
    return 0;
}

/* ---- the client side ------------------------------------------------------- */

struct out {
    char *p;
    size_t n, cap;
};

/* Reads what the server wrote. Returns 1 at end of stream, else 0. */
static int drain(int fd, struct out *o, int *progress)
{
    for (;;) {
        if (o->cap - o->n < 4096) {
            o->cap = o->cap ? o->cap * 2 : 16384;
            o->p = realloc(o->p, o->cap);
        }
        ssize_t r = read(fd, o->p + o->n, o->cap - o->n);
        if (r > 0) {
            o->n += (size_t)r;
            *progress = 1;
            continue;
        }
        if (r == 0)
            return 1;
        return errno == EAGAIN ? 0 : 1; /* ECONNRESET: the server closed */
    }
}

/* Runs the loop until the server closes, or nothing is in flight and nothing
 * moves for a few rounds. */
static void pump(int cfd, const uint8_t *data, size_t size, struct out *o)
{
    size_t sent = 0;
    int quiet = 0;
    double start = now_s();
    for (;;) {
        if (sent < size) {
            ssize_t k = write(cfd, data + sent, size - sent);
            if (k > 0)
                sent += (size_t)k;
            else if (errno != EAGAIN)
                sent = size; /* the server closed: stop sending */
        }
        event_base_loop(w.host.base, EVLOOP_NONBLOCK);
        int progress = 0;
        if (drain(cfd, o, &progress))
            return;
        if (w.requests.nlive > 0 || w.requests.writing > 0 || sent < size || progress)
            quiet = 0;
        else if (++quiet >= 4)
            return;
        if (w.requests.nlive > 0) { /* a pool job: wait for its event */
            struct timeval tv = {0, 1000};
            event_base_loopexit(w.host.base, &tv);
            event_base_loop(w.host.base, EVLOOP_ONCE);
        }
        FUZZ_CHECK(now_s() - start < 4.0, "a request still in flight after 4 s");
    }
}

/* One header block at s[0 .. n): status line and header lines. Returns the
 * length including the blank line, or 0 when incomplete; fills *status and
 * whether it has X-Request-Id and its Content-Length (-1 if none). */
static size_t parse_head(const char *s, size_t n, int *status, int *has_id, long *clen,
                         int *chunked)
{
    const char *end = memmem(s, n, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t hn = (size_t)(end - s) + 4;
    /* evhttp answers in the request's version, as it parsed it: "HTTP/0.1"
     * in gives "HTTP/0.1 404" out, and "HTTP/1.1000" (a minor version past
     * what its char holds) gives "HTTP/1.-24 400". That is libevent 2.1's
     * doing, not steeple's, so the version is only skipped here. */
    const char *sp = memchr(s, ' ', hn);
    FUZZ_CHECK(memcmp(s, "HTTP/", 5) == 0 && sp != NULL && sp - s <= 16, "bad status line: %.40s",
               s);
    const char *d = sp + 1; /* the status digits */
    FUZZ_CHECK(d + 4 <= s + hn && isdigit((unsigned char)d[0]) && isdigit((unsigned char)d[1]) &&
                   isdigit((unsigned char)d[2]) && (d[3] == ' ' || d[3] == '\r'),
               "bad status line: %.40s", s);
    *status = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    FUZZ_CHECK(*status >= 100 && *status <= 599, "status %d", *status);
    *has_id = 0;
    *clen = -1;
    *chunked = 0;
    const char *line = (const char *)memchr(s, '\n', hn) + 1;
    while (line < end + 2) {
        const char *nl = memchr(line, '\n', (size_t)(end + 4 - line));
        FUZZ_CHECK(nl && nl > line && nl[-1] == '\r', "a header line without CRLF");
        size_t ln = (size_t)(nl - line) - 1;
        if (ln == 0)
            break;
        const char *colon = memchr(line, ':', ln);
        FUZZ_CHECK(colon && colon > line, "a header line without a name: %.*s", (int)ln, line);
        for (const char *c = line; c < colon; c++)
            FUZZ_CHECK(isgraph((unsigned char)*c), "a bad header name: %.*s", (int)ln, line);
        for (const char *c = colon; c < line + ln; c++)
            FUZZ_CHECK(*c != '\r' && *c != '\0', "CR or NUL in a header value");
        if ((size_t)(colon - line) == 12 && strncasecmp(line, "X-Request-Id", 12) == 0)
            *has_id = 1;
        if ((size_t)(colon - line) == 14 && strncasecmp(line, "Content-Length", 14) == 0)
            *clen = strtol(colon + 1, NULL, 10);
        if ((size_t)(colon - line) == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0)
            *chunked = 1;
        line = nl + 1;
    }
    return hn;
}

/* Walks the responses: the handled requests' first, in order. */
static void check_responses(const struct out *o)
{
    size_t pos = 0;
    int k = 0;
    while (pos < o->n) {
        int status, has_id, chunked;
        long clen;
        size_t hn = parse_head(o->p + pos, o->n - pos, &status, &has_id, &clen, &chunked);
        FUZZ_CHECK(hn > 0, "an incomplete response head (%zu bytes)", o->n - pos);
        FUZZ_CHECK(status != 500 || getenv("FUZZ_ALLOW_500") != NULL,
                   "a 500 response (see the log line above for the handler's error)");
        if (status < 200) { /* 100 Continue: an interim answer, not one of its own */
            pos += hn;
            continue;
        }
        if (k < handled && k < checked)
            FUZZ_CHECK(has_id, "response %d to a handled request has no X-Request-Id", k);
        pos += hn;
        int head = k < handled && k < MAX_HANDLED && strcmp(handled_method[k], "HEAD") == 0;
        k++;
        if (chunked || (clen < 0 && status >= 200 && status != 204 && status != 304))
            return; /* the body runs to the close: nothing after it */
        if (!head && status >= 200 && status != 204 && status != 304 && clen > 0) {
            FUZZ_CHECK((size_t)clen <= o->n - pos, "a body shorter than its Content-Length");
            pos += (size_t)clen;
        }
    }
    FUZZ_CHECK(k >= checked, "%d handled requests but %d responses", checked, k);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct out o;
    static unsigned long runs;
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct linger abort_on_close = {1, 0}; /* RST: no TIME_WAIT pile-up */
    int one = 1;
    if (cfd < 0 || setsockopt(cfd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) ||
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        fcntl(cfd, F_SETFL, O_NONBLOCK) != 0) {
        perror("fuzz_request: socket");
        abort();
    }
    /* non-blocking, so libFuzzer's SIGALRM cannot cut it short (EINTR);
     * the kernel completes a loopback handshake without the accept */
    if (connect(cfd, (struct sockaddr *)&server, sizeof server) != 0 && errno != EINPROGRESS &&
        errno != EINTR) {
        perror("fuzz_request: connect");
        abort();
    }
    struct pollfd pfd = {cfd, POLLOUT, 0};
    int soerr = 0;
    socklen_t elen = sizeof soerr;
    while (poll(&pfd, 1, 2000) < 0 && errno == EINTR)
        continue;
    if (getsockopt(cfd, SOL_SOCKET, SO_ERROR, &soerr, &elen) != 0 || soerr != 0) {
        fprintf(stderr, "fuzz_request: connect: %s\n", strerror(soerr));
        abort();
    }
    handled = checked = status_500 = 0;
    o.n = 0;
    pump(cfd, data, size, &o);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_request: %d handled, response:\n%.*s\n", handled,
                (int)(o.n > 600 ? 600 : o.n), o.p ? o.p : "");
    check_responses(&o);
    close(cfd); /* the client goes; evhttp sees the connection reset */
    for (int i = 0; i < 8; i++)
        event_base_loop(w.host.base, EVLOOP_NONBLOCK);
    FUZZ_CHECK(w.requests.nlive == 0, "%d requests still in flight after the client left",
               w.requests.nlive);
    if (++runs % 4096 == 0)
        FUZZ_CHECK(open_fds() < 256, "file descriptors pile up: %d open", open_fds());
    return 0;
}
