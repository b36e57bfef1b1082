/* lua_host.c — building, sharing and retiring script states (see lua_host.h). */
#include "lua_host.h"
#include "clock.h"
#include "config_load.h"
#include "host.h"
#include "log.h"

#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char host_key = 'h'; /* registry[&host_key] = struct host * */
static unsigned generations;

/* Loading app.lua may not run longer than this. */
#define LOAD_LIMIT_S 5.0
static double load_deadline;

struct host *script_host(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &host_key);
    struct host *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

static void load_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (clock_mono() > load_deadline) {
        lua_sethook(L, load_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
        luaL_error(L, "loading the scripts took longer than %.0f s", LOAD_LIMIT_S);
    }
}

static const char lock_globals[] =
    "local setmetatable, error, tostring = setmetatable, error, tostring\n"
    "setmetatable(_G, {\n"
    "  __newindex = function(_, k) error('assignment to undeclared global ' .. tostring(k), 2) end,\n"
    "  __index = function(_, k) error('undeclared global ' .. tostring(k), 2) end,\n"
    "})\n";

/* Under pcall, with the app table on top: a registry reference to
 * app[name], or LUA_NOREF when it is nil; raises when it is no function.
 * Leaves the stack as it found it. */
static int optional_function(lua_State *L, const char *name)
{
    int t = lua_getfield(L, -1, name); /* app field */
    if (t == LUA_TNIL) {
        lua_pop(L, 1); /* app */
        return LUA_NOREF;
    }
    if (t != LUA_TFUNCTION)
        return luaL_error(L, "app.%s must be a function", name);
    return luaL_ref(L, LUA_REGISTRYINDEX); /* app */
}

/* Under pcall: loads the configuration and app.lua; leaves nothing behind. */
static int load_app(lua_State *L)
{
    struct script_state *ss = lua_touserdata(L, 1);
    char err[512];

    config_push(L, script_host(L)->config_path); /* cfg */
    if (config_read(L, -1, &ss->cfg, err, sizeof err) != 0)
        return luaL_error(L, "%s", err);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "steeple.config"); /* cfg loaded */
    lua_pop(L, 2);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "app");
    lua_call(L, 1, 1); /* app */
    if (lua_getfield(L, -1, "handle") != LUA_TFUNCTION)
        return luaL_error(L, "app.lua must return a table with a function 'handle'");
    ss->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* app */
    ss->tick_ref = optional_function(L, "tick");
    ss->body_limit_ref = optional_function(L, "body_limit");
    ss->stop_ref = optional_function(L, "stop");
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, lock_globals, sizeof lock_globals - 1, "=lock_globals") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 0);
    return 0;
}

struct script_state *script_state_new(struct host *h, lua_State *L, char *err, size_t errlen)
{
    struct script_state *ss = L ? calloc(1, sizeof *ss) : NULL;
    if (ss == NULL) {
        if (L)
            lua_close(L);
        snprintf(err, errlen, "out of memory creating a Lua state");
        return NULL;
    }
    ss->L = L;
    ss->refs = 1;
    lua_gc(L, LUA_GCGEN, 0, 0); /* requests make short-lived garbage */
    ss->handler_ref = LUA_NOREF;
    ss->tick_ref = LUA_NOREF;
    ss->body_limit_ref = LUA_NOREF;
    ss->stop_ref = LUA_NOREF;
    lua_pushlightuserdata(L, h);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &host_key);

    load_deadline = clock_mono() + LOAD_LIMIT_S;
    lua_sethook(L, load_hook, LUA_MASKCOUNT, 10000);
    lua_pushcfunction(L, load_app);
    lua_pushlightuserdata(L, ss);
    int rc = lua_pcall(L, 1, 0, 0);
    lua_sethook(L, NULL, 0, 0);
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
        lua_close(L);
        free(ss);
        return NULL;
    }
    ss->generation = ++generations;
    return ss;
}

void script_state_ref(struct script_state *ss)
{
    ss->refs++;
}

void script_state_unref(struct script_state *ss)
{
    if (--ss->refs > 0)
        return;
    log_debug("closing script state %u", ss->generation);
    lua_close(ss->L);
    free(ss);
}

struct limit_call {
    struct script_state *ss;
    const char *method, *path;
    long limit;
};

/* Under pcall on the main state: app.body_limit(method, path). */
static int call_body_limit(lua_State *L)
{
    struct limit_call *c = lua_touserdata(L, 1);
    int isnum = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->ss->body_limit_ref); /* fn */
    lua_pushstring(L, c->method);
    lua_pushstring(L, c->path);
    lua_call(L, 2, 1); /* limit */
    lua_Integer n = lua_tointegerx(L, -1, &isnum);
    if (!isnum || n <= 0 || n > LONG_MAX)
        return luaL_error(L, "app.body_limit returned %s, not a positive integer",
                          luaL_typename(L, -1));
    c->limit = (long)n;
    return 0;
}

long script_body_limit(void *arg, const char *method, const char *path)
{
    struct host *h = arg;
    struct script_state *ss = h->scripts;
    if (ss == NULL || ss->body_limit_ref == LUA_NOREF)
        return 0;
    struct limit_call c = {ss, method, path, 0};
    lua_State *L = ss->L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_body_limit);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        log_error("app.body_limit failed; using limits.body_bytes: %s", lua_tostring(L, -1));
    lua_settop(L, top);
    return c.limit;
}
