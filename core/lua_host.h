/* lua_host.h — building, sharing and retiring Lua script states.
 *
 * A script state is a complete lua_State with steeple's libraries opened
 * (lua_libs.h), the configuration loaded, and lua/app.lua required. It is
 * refcounted: the worker holds one reference while the state is current, and
 * every request coroutine running on it holds one; it is closed when the last
 * goes. */
#ifndef STEEPLE_LUA_HOST_H
#define STEEPLE_LUA_HOST_H

#include "config.h"

struct lua_State;
struct host;

/* Finished request coroutines kept for reuse, per state. */
#define SCRIPT_IDLE_THREADS 64

struct script_state {
    struct lua_State *L;
    int refs;
    int handler_ref; /* registry reference to app.handle */
    int tick_ref;    /* app.tick, or LUA_NOREF when app has none */
    int body_limit_ref; /* app.body_limit, or LUA_NOREF when app has none */
    int stop_ref;    /* app.stop, or LUA_NOREF when app has none */
    unsigned generation;
    struct config cfg;
    int nidle; /* idle[i] is pinned by the registry reference idle_ref[i] */
    struct lua_State *idle[SCRIPT_IDLE_THREADS];
    int idle_ref[SCRIPT_IDLE_THREADS];
};

/* Makes L, a new state with steeple's libraries opened (lua_libs.h:
 * steeple_newstate; NULL: out of memory), a script state of host h: loads
 * the configuration from h->config_path and app.lua, under a time limit.
 * Returns the state with one reference, or NULL (L closed) with a message,
 * naming the file and line where Lua gave them, in err. */
struct script_state *script_state_new(struct host *h, struct lua_State *L, char *err,
                                      size_t errlen) __attribute__((warn_unused_result));

void script_state_ref(struct script_state *ss);
/* Drops a reference; closes the state at zero. */
void script_state_unref(struct script_state *ss);

/* The host a state belongs to, as stored in its registry. */
struct host *script_host(struct lua_State *L);

/* The largest body to read for a request to method and path: app.body_limit
 * of the host's current scripts (a route's own limit), or 0 (limits.body_bytes)
 * when the scripts have none or it fails. arg is the host; the signature is
 * http_conn.h's http_path_limit_fn. */
long script_body_limit(void *arg, const char *method, const char *path);

#endif
