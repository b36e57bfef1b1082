/* lua_host.h — building, sharing and retiring Lua script states.
 *
 * A script state is a complete lua_State with the steeple modules preloaded,
 * the configuration loaded, and lua/app.lua required. It is refcounted: the
 * worker holds one reference while the state is current, and every request
 * coroutine running on it holds one; it is closed when the last goes. */
#ifndef STEEPLE_LUA_HOST_H
#define STEEPLE_LUA_HOST_H

#include "config.h"

#include <lua.h>

struct worker;

/* Finished request coroutines kept for reuse, per state. */
#define SCRIPT_IDLE_THREADS 64

struct script_state {
    lua_State *L;
    int refs;
    int handler_ref; /* registry reference to app.handle */
    int tick_ref;    /* app.tick, or LUA_NOREF when app has none */
    int body_limit_ref; /* app.body_limit, or LUA_NOREF when app has none */
    unsigned generation;
    struct config cfg;
    int nidle; /* idle[i] is pinned by the registry reference idle_ref[i] */
    lua_State *idle[SCRIPT_IDLE_THREADS];
    int idle_ref[SCRIPT_IDLE_THREADS];
};

/* Builds a state from w->lua_dir and w->config_path. Loading runs under a
 * time limit. Returns the state with one reference, or NULL with a message
 * (naming the file and line where Lua gave them) in err. */
struct script_state *script_state_new(struct worker *w, char *err, size_t errlen)
    __attribute__((warn_unused_result));

void script_state_ref(struct script_state *ss);
/* Drops a reference; closes the state at zero. */
void script_state_unref(struct script_state *ss);

/* The worker that owns a state, as stored in its registry. */
struct worker *script_worker(lua_State *L);

/* Opens the standard libraries, preloads the steeple.* modules and cjson, and
 * sets package.path to lua_dir. Used by script states and config loading. */
void script_open_libs(lua_State *L, const char *lua_dir);

#endif
