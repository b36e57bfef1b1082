/* task.c — the tasks a worker starts on its scripts (see task.h). */
#include "task.h"
#include "host.h"
#include "log.h"
#include "lua_host.h"
#include "request.h"

#include <lauxlib.h>
#include <math.h>

/* Starts the app's function `ref` of the current scripts as a task, ended
 * after `seconds` (INFINITY: never). Returns as task_tick does. */
static int start_app_function(struct request_set *rs, int ref, double seconds, int *exit_code)
{
    if (ref == LUA_NOREF)
        return 1;
    lua_State *L = rs->host->scripts->L;
    lua_State *T = lua_newthread(L);       /* L: T */
    lua_rawgeti(T, LUA_REGISTRYINDEX, ref); /* T: fn */
    int rc = request_spawn_until(rs, T, 0, exit_code, seconds);
    lua_pop(L, 1);
    return rc;
}

int task_tick(struct request_set *rs, int *exit_code)
{
    return start_app_function(rs, rs->host->scripts->tick_ref, INFINITY, exit_code);
}

int task_stop(struct request_set *rs, double seconds)
{
    if (rs->host->scripts == NULL) /* told to stop before its scripts loaded */
        return 1;
    return start_app_function(rs, rs->host->scripts->stop_ref, seconds, NULL);
}

/* Pushes require(module).main and the argument list onto T; under pcall. */
static int push_command(lua_State *T)
{
    const char *module = lua_tostring(T, 1);
    char **argv = lua_touserdata(T, 2);
    int argc = (int)lua_tointeger(T, 3);
    lua_settop(T, 0);
    lua_getglobal(T, "require");
    lua_pushstring(T, module);
    lua_call(T, 1, 1);
    if (lua_getfield(T, -1, "main") != LUA_TFUNCTION)
        return luaL_error(T, "%s has no function main", module);
    lua_remove(T, 1); /* main */
    lua_createtable(T, argc, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(T, argv[i]);
        lua_rawseti(T, -2, i + 1);
    }
    return 2;
}

int task_command(struct request_set *rs, const char *module, int argc, char **argv,
                    int *exit_code)
{
    lua_State *L = rs->host->scripts->L;
    lua_State *T = lua_newthread(L); /* anchored on L's stack until the end */
    lua_pushcfunction(T, push_command);
    lua_pushstring(T, module);
    lua_pushlightuserdata(T, argv);
    lua_pushinteger(T, argc);
    if (lua_pcall(T, 3, 2, 0) != LUA_OK) {
        log_error("cannot run %s: %s", module, lua_tostring(T, -1));
        lua_pop(L, 1);
        return -1;
    }
    int rc = request_spawn(rs, T, 1, exit_code);
    lua_pop(L, 1); /* the task holds what it needs */
    return rc;
}
