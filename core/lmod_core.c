/* lmod_core.c — the `steeple` module: sleep, clocks, worker identity.
 *
 *   steeple.sleep(ms)      suspends the request for ms milliseconds
 *   steeple.now()          wall-clock seconds since the epoch (float)
 *   steeple.clock()        monotonic seconds (float), for durations
 *   steeple.worker()       this worker's index (0-based)
 *   steeple.node()         this node's identity, "<hostname>:<master pid>": the
 *                          same in every worker of one serve process, and
 *                          different in another process, on this host or another
 *   steeple.request_id()   the running request's id, or nil outside one
 *   steeple.current()      false once the scripts running the caller were
 *                          replaced by a reload (a long task then ends, so
 *                          that the new scripts and configuration take over)
 *   steeple.spawn(fn, ...)  runs fn(...) as a background task (no deadline);
 *                          its errors are logged; true, or nil, "stopping" */
#include "clock.h"
#include "host.h"
#include "lmod.h"
#include "lua_host.h"
#include "request.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct sleeper {
    struct event *ev;
    struct request *r;
};

static int no_results(lua_State *L, void *data)
{
    (void)L;
    (void)data;
    return 0;
}

static void sleep_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sleeper *s = arg;
    struct request *r = s->r;
    event_free(s->ev);
    free(s);
    request_resume(r, no_results, NULL);
}

static void sleep_cancel(void *data)
{
    struct sleeper *s = data;
    event_free(s->ev);
    free(s);
}

static int l_sleep(lua_State *L)
{
    struct request *r = request_check(L, "steeple.sleep");
    lua_Number ms = luaL_checknumber(L, 1);
    luaL_argcheck(L, ms >= 0 && ms <= 86400000.0 && isfinite(ms), 1,
                  "milliseconds must be between 0 and 86400000");
    struct sleeper *s = malloc(sizeof *s);
    if (s == NULL)
        return luaL_error(L, "steeple.sleep: out of memory");
    s->r = r;
    s->ev = evtimer_new(request_host(r)->base, sleep_done, s);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)fmod(ms, 1000.0) * 1000};
    if (s->ev == NULL || evtimer_add(s->ev, &tv) != 0) {
        if (s->ev)
            event_free(s->ev);
        free(s);
        return luaL_error(L, "steeple.sleep: could not arm a timer");
    }
    request_suspend(r, sleep_cancel, s);
    return lua_yield(L, 0);
}

static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    struct host *h = script_host(L);
    if (h->requests == NULL || (request_running(L) == NULL && h->scripts == NULL))
        return luaL_error(L, "steeple.spawn: API disabled in this context");
    if (h->stopping) {
        lua_pushnil(L);
        lua_pushliteral(L, "stopping");
        return 2;
    }
    if (request_spawn(h->requests, L, lua_gettop(L) - 1, NULL) != 0)
        return luaL_error(L, "steeple.spawn: out of memory");
    lua_pushboolean(L, 1);
    return 1;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, clock_wall());
    return 1;
}

static int l_clock(lua_State *L)
{
    lua_pushnumber(L, clock_mono());
    return 1;
}

static int l_worker(lua_State *L)
{
    lua_pushinteger(L, script_host(L)->index);
    return 1;
}

/* Pushes "<hostname>:<master pid>" ("unknown" when the host has no name
 * to give). The master is the process with index -1 (it checks the scripts
 * before it forks); a worker's parent is its master. */
static int l_node(lua_State *L)
{
    char name[256];
    if (gethostname(name, sizeof name) != 0)
        snprintf(name, sizeof name, "unknown");
    name[sizeof name - 1] = '\0'; /* a truncated name need not end in NUL */
    int master = script_host(L)->index < 0 ? (int)getpid() : (int)getppid();
    lua_pushfstring(L, "%s:%d", name, master);
    return 1;
}

static int l_request_id(lua_State *L)
{
    struct request *r = request_running(L);
    if (r == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, request_id(r));
    return 1;
}

static int l_current(lua_State *L)
{
    struct host *h = script_host(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushboolean(L, h->scripts != NULL && h->scripts->L == main);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"sleep", l_sleep},   {"now", l_now},
    {"clock", l_clock},   {"worker", l_worker}, {"node", l_node},
    {"request_id", l_request_id}, {"spawn", l_spawn},
    {"current", l_current},       {NULL, NULL},
};

int luaopen_steeple(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
