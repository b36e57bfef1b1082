/* lua_host.c — building, sharing and retiring script states (see lua_host.h). */
#include "lua_host.h"
#include "clock.h"
#include "lmod.h"
#include "log.h"
#include "worker.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char worker_key = 'w'; /* registry[&worker_key] = struct worker * */
static unsigned generations;

/* Loading app.lua may not run longer than this. */
#define LOAD_LIMIT_S 5.0
static double load_deadline;

struct worker *script_worker(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &worker_key);
    struct worker *w = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return w;
}

static void preload(lua_State *L, const char *name, lua_CFunction open)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE); /* preload */
    lua_pushcfunction(L, open);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

void script_open_libs(lua_State *L, const char *lua_dir)
{
    luaL_openlibs(L);
    preload(L, "cjson", luaopen_cjson);
    preload(L, "steeple", luaopen_steeple);
    preload(L, "steeple.log", luaopen_steeple_log);
    preload(L, "steeple.metrics", luaopen_steeple_metrics);
    preload(L, "steeple.crypto", luaopen_steeple_crypto);
    preload(L, "steeple.db", luaopen_steeple_db);
    preload(L, "steeple.ratelimit", luaopen_steeple_ratelimit);
    preload(L, "steeple.spool", luaopen_steeple_spool);
    preload(L, "steeple.http", luaopen_steeple_http);
    preload(L, "steeple.csv", luaopen_steeple_csv);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", lua_dir, lua_dir);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, ""); /* native modules come from the binary only */
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
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

/* Under pcall: loads the configuration and app.lua; leaves nothing behind. */
static int load_app(lua_State *L)
{
    struct script_state *ss = lua_touserdata(L, 1);
    struct worker *w = script_worker(L);
    char err[512];

    config_push(L, w->config_path); /* cfg */
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
    int t = lua_getfield(L, -1, "tick");                /* app tick */
    if (t != LUA_TFUNCTION && t != LUA_TNIL)
        return luaL_error(L, "app.tick must be a function");
    ss->tick_ref = t == LUA_TFUNCTION ? luaL_ref(L, LUA_REGISTRYINDEX) : LUA_NOREF;
    if (t == LUA_TNIL)
        lua_pop(L, 1);
    t = lua_getfield(L, -1, "body_limit"); /* app body_limit */
    if (t != LUA_TFUNCTION && t != LUA_TNIL)
        return luaL_error(L, "app.body_limit must be a function");
    ss->body_limit_ref = t == LUA_TFUNCTION ? luaL_ref(L, LUA_REGISTRYINDEX) : LUA_NOREF;
    if (t == LUA_TNIL)
        lua_pop(L, 1);
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, lock_globals, sizeof lock_globals - 1, "=lock_globals") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 0);
    return 0;
}

struct script_state *script_state_new(struct worker *w, char *err, size_t errlen)
{
    struct script_state *ss = calloc(1, sizeof *ss);
    lua_State *L = ss ? luaL_newstate() : NULL;
    if (L == NULL) {
        free(ss);
        snprintf(err, errlen, "out of memory creating a Lua state");
        return NULL;
    }
    ss->L = L;
    ss->refs = 1;
    lua_gc(L, LUA_GCGEN, 0, 0); /* requests make short-lived garbage */
    ss->handler_ref = LUA_NOREF;
    ss->tick_ref = LUA_NOREF;
    ss->body_limit_ref = LUA_NOREF;
    lua_pushlightuserdata(L, w);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &worker_key);
    script_open_libs(L, w->lua_dir);

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
