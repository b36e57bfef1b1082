/* lmod_http.c — the `steeple.http` module.
 *
 *   http.request{
 *       url = "https://api.example.com/v1/x?y=1",  -- required; http or https
 *       method = "POST",                 -- default "GET"; GET HEAD POST PUT
 *                                        -- DELETE OPTIONS PATCH
 *       headers = { ["Content-Type"] = "application/json" },  -- strings
 *       body = "...",                    -- default none
 *       timeout_ms = 30000,              -- the whole call; default 30000
 *       connect_timeout_ms = 10000,      -- DNS, TCP and TLS; default 10000
 *   }
 *     -> status, body, headers   any status; headers has lower-case names,
 *                                and repeated ones joined with ", "
 *     -> nil, err                "timeout", "connect failed: …",
 *                                "tls: certificate verify failed: …",
 *                                "dns: …", "response too large", … (see
 *                                http_client.h)
 *
 * Suspends the request (or task) until the answer; wrong argument types, a
 * missing url, an unknown method and a NUL inside a string raise. Host,
 * Content-Length, Connection and Transfer-Encoding are set by the client.
 * Certificates are checked against OpenSSL's default CA paths, which
 * SSL_CERT_FILE and SSL_CERT_DIR override. Each worker has one client,
 * made on first use (host.h: http_client). */
#include "host.h"
#include "http_client.h"
#include "lmod.h"
#include "request.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS_DEFAULT 30000
#define CONNECT_TIMEOUT_MS_DEFAULT 10000
#define TIMEOUT_MS_MAX 86400000

/* Stack slots l_request fills: the option values stay there, so every string
 * the http_request points to is anchored until the client has copied it. */
enum { ARG_OPTS = 1, ARG_URL, ARG_METHOD, ARG_HEADERS, ARG_BODY, ARG_TIMEOUT, ARG_CONNECT,
       ARG_HEADER_ARRAY };

struct http_job {
    struct request *r;
    struct http_call *call;
};

struct http_outcome {
    const struct http_response *res;
    const char *err;
};

/* ---- results --------------------------------------------------------------- */

/* Pushes name in lower case. */
static void push_lower(lua_State *L, const char *name)
{
    size_t len = strlen(name);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len); /* may push a box */
    for (size_t i = 0; i < len; i++)
        p[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] - 'A' + 'a') : name[i];
    luaL_pushresultsize(&b, len); /* name */
}

/* Pushes the headers table. */
static void push_headers(lua_State *L, const struct http_response *res)
{
    lua_createtable(L, 0, (int)(res->nheaders < 64 ? res->nheaders : 64)); /* t */
    for (size_t i = 0; i < res->nheaders; i++) {
        push_lower(L, res->headers[i].name); /* t name */
        lua_pushvalue(L, -1);                /* t name name */
        if (lua_rawget(L, -3) == LUA_TNIL) { /* t name old */
            lua_pop(L, 1);                   /* t name */
            lua_pushstring(L, res->headers[i].value);
        } else {
            lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), res->headers[i].value);
            lua_remove(L, -2); /* t name joined */
        }
        lua_rawset(L, -3); /* t */
    }
}

/* status, body, headers; or nil, err. Runs under request_resume's pcall. */
static int http_retval(lua_State *L, void *data)
{
    const struct http_outcome *o = data;
    if (o->err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, o->err);
        return 2;
    }
    lua_pushinteger(L, o->res->status);
    lua_pushlstring(L, o->res->body, o->res->body_len);
    push_headers(L, o->res);
    return 3;
}

static void http_done(void *arg, const struct http_response *res, const char *err)
{
    struct http_job *j = arg;
    struct request *r = j->r;
    struct http_outcome o = {res, err};
    free(j); /* the call is over; res and err stay valid until we return */
    request_resume(r, http_retval, &o);
}

/* The request died first: abandon the call. */
static void http_cancel(void *data)
{
    struct http_job *j = data;
    http_call_cancel(j->call);
    free(j);
}

/* ---- arguments ------------------------------------------------------------- */

/* The string option at slot, or dflt when it is nil; raises unless it is a
 * string without NUL bytes. */
static const char *opt_string(lua_State *L, int slot, const char *name, const char *dflt)
{
    if (lua_isnil(L, slot))
        return dflt;
    if (lua_type(L, slot) != LUA_TSTRING)
        luaL_error(L, "http.request: %s must be a string", name);
    size_t len;
    const char *s = lua_tolstring(L, slot, &len);
    if (strlen(s) != len)
        luaL_error(L, "http.request: %s contains a NUL byte", name);
    return s;
}

/* The option at slot in milliseconds as seconds, or dflt_ms; raises unless
 * it is a number in (0, TIMEOUT_MS_MAX]. */
static double opt_ms(lua_State *L, int slot, const char *name, lua_Number dflt_ms)
{
    if (lua_isnil(L, slot))
        return dflt_ms / 1000.0;
    if (lua_type(L, slot) != LUA_TNUMBER)
        luaL_error(L, "http.request: %s must be a number", name);
    lua_Number ms = lua_tonumber(L, slot);
    if (!(ms > 0 && ms <= TIMEOUT_MS_MAX))
        luaL_error(L, "http.request: %s must be between 0 and %d", name, TIMEOUT_MS_MAX);
    return ms / 1000.0;
}

/* Fills req->headers from the table at ARG_HEADERS into a userdata array at
 * ARG_HEADER_ARRAY; names and values stay anchored in the table. */
static void read_headers(lua_State *L, struct http_request *req)
{
    if (lua_isnil(L, ARG_HEADERS)) {
        lua_pushnil(L); /* ARG_HEADER_ARRAY: none */
        return;
    }
    if (!lua_istable(L, ARG_HEADERS))
        luaL_error(L, "http.request: headers must be a table");
    size_t n = 0;
    for (lua_pushnil(L); lua_next(L, ARG_HEADERS); lua_pop(L, 1)) /* key value */
        n++;
    struct http_header *h = lua_newuserdatauv(L, (n ? n : 1) * sizeof *h, 0); /* array */
    size_t i = 0;
    for (lua_pushnil(L); lua_next(L, ARG_HEADERS); lua_pop(L, 1), i++) { /* key value */
        size_t klen, vlen;
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "http.request: header names and values must be strings");
        h[i].name = lua_tolstring(L, -2, &klen); /* no conversion: both are strings */
        h[i].value = lua_tolstring(L, -1, &vlen);
        if (strlen(h[i].name) != klen || strlen(h[i].value) != vlen)
            luaL_error(L, "http.request: header %s contains a NUL byte", h[i].name);
    }
    req->headers = h;
    req->nheaders = n;
}

/* Reads the options table into req; raises on misuse. */
static void read_request(lua_State *L, struct http_request *req)
{
    luaL_checktype(L, ARG_OPTS, LUA_TTABLE);
    lua_settop(L, ARG_OPTS);
    static const char *const fields[] = {"url", "method", "headers", "body", "timeout_ms",
                                         "connect_timeout_ms"}; /* in slot order */
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        lua_getfield(L, ARG_OPTS, fields[i]); /* opts ... field: ARG_URL .. ARG_CONNECT */
    req->url = opt_string(L, ARG_URL, "url", NULL);
    if (req->url == NULL)
        luaL_error(L, "http.request: url is required");
    req->method = opt_string(L, ARG_METHOD, "method", "GET");
    if (!http_method_valid(req->method))
        luaL_error(L, "http.request: unknown method '%s'", req->method);
    if (!lua_isnil(L, ARG_BODY)) {
        if (lua_type(L, ARG_BODY) != LUA_TSTRING)
            luaL_error(L, "http.request: body must be a string");
        req->body = lua_tolstring(L, ARG_BODY, &req->body_len);
    }
    req->timeout_s = opt_ms(L, ARG_TIMEOUT, "timeout_ms", TIMEOUT_MS_DEFAULT);
    req->connect_timeout_s = opt_ms(L, ARG_CONNECT, "connect_timeout_ms",
                                    CONNECT_TIMEOUT_MS_DEFAULT);
    read_headers(L, req); /* ARG_HEADER_ARRAY */
}

/* ---- http.request ------------------------------------------------------------ */

/* The worker's client, made on first use; NULL with a message in err. */
static struct http_client *worker_client(struct host *w, char *err, size_t errlen)
{
    if (w->http_client == NULL)
        w->http_client = http_client_new(w->base, NULL, err, errlen);
    return w->http_client;
}

static int l_request(lua_State *L)
{
    struct request *r = request_check(L, "http.request");
    struct http_request req = {0};
    read_request(L, &req);
    char err[256];
    struct http_client *c = worker_client(request_host(r), err, sizeof err);
    if (c == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    struct http_job *j = malloc(sizeof *j);
    if (j == NULL)
        return luaL_error(L, "http.request: out of memory");
    j->r = r;
    j->call = http_client_request(c, &req, http_done, j); /* copies what it needs */
    if (j->call == NULL) {
        free(j);
        return luaL_error(L, "http.request: out of memory");
    }
    request_suspend(r, http_cancel, j);
    return lua_yield(L, 0);
}

static const luaL_Reg funcs[] = {
    {"request", l_request},
    {NULL, NULL},
};

int luaopen_steeple_http(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
