/* lmod_latch.c — the `steeple.latch` module: one task waits for another.
 *
 *   local latch = require "steeple.latch"
 *   local l = latch.new()
 *   l:wait([ms])   suspends the caller until l is set (true), or until ms
 *                  milliseconds have passed (false); true at once when l is
 *                  set already
 *   l:set()        sets l: every waiter resumes (from the loop, never inside
 *                  the caller), and later waits return true at once
 *   l:is_set()
 *
 * A latch is set once and stays set. Waiters are requests or tasks; a
 * waiter whose request ends first (its deadline, a client gone) leaves the
 * latch's list. */
#include "host.h"
#include "lmod.h"
#include "request.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define LATCH_MT "steeple.latch"

struct waiter;

struct latch {
    int set;
    struct waiter *head; /* waiting, in no particular order */
};

struct waiter {
    struct latch *latch; /* NULL once taken off the latch's list */
    struct request *r;
    struct event *ev;    /* fires on set (activated) or on the timeout */
    int woken;
    struct waiter *prev, *next;
};

static void unlink_waiter(struct waiter *w)
{
    if (w->latch == NULL)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        w->latch->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->latch = NULL;
    w->prev = w->next = NULL;
}

static int push_woken(lua_State *L, void *data)
{
    lua_pushboolean(L, data != NULL);
    return 1;
}

static void waiter_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct waiter *w = arg;
    struct request *r = w->r;
    int woken = w->woken;
    unlink_waiter(w);
    event_free(w->ev);
    free(w);
    request_resume(r, push_woken, woken ? (void *)(uintptr_t)1 : NULL);
}

static void waiter_cancel(void *data)
{
    struct waiter *w = data;
    unlink_waiter(w);
    event_free(w->ev);
    free(w);
}

static struct latch *check_latch(lua_State *L)
{
    return luaL_checkudata(L, 1, LATCH_MT);
}

static int l_new(lua_State *L)
{
    struct latch *l = lua_newuserdatauv(L, sizeof *l, 0);
    l->set = 0;
    l->head = NULL;
    luaL_setmetatable(L, LATCH_MT);
    return 1;
}

static int l_wait(lua_State *L)
{
    struct latch *l = check_latch(L);
    lua_Number ms = luaL_optnumber(L, 2, -1);
    luaL_argcheck(L, ms == -1 || (ms >= 0 && ms <= 86400000.0 && isfinite(ms)), 2,
                  "milliseconds must be between 0 and 86400000");
    if (l->set) {
        lua_pushboolean(L, 1);
        return 1;
    }
    struct request *r = request_check(L, "latch:wait");
    struct waiter *w = calloc(1, sizeof *w);
    if (w == NULL)
        return luaL_error(L, "latch:wait: out of memory");
    w->r = r;
    w->ev = evtimer_new(request_host(r)->base, waiter_fire, w);
    if (w->ev == NULL) {
        free(w);
        return luaL_error(L, "latch:wait: could not make a timer");
    }
    if (ms >= 0) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(fmod(ms, 1000.0) * 1000)};
        if (evtimer_add(w->ev, &tv) != 0) {
            event_free(w->ev);
            free(w);
            return luaL_error(L, "latch:wait: could not arm a timer");
        }
    }
    w->latch = l;
    w->next = l->head;
    if (l->head)
        l->head->prev = w;
    l->head = w;
    request_suspend(r, waiter_cancel, w);
    return lua_yield(L, 0);
}

static int l_set(lua_State *L)
{
    struct latch *l = check_latch(L);
    l->set = 1;
    while (l->head != NULL) {
        struct waiter *w = l->head;
        unlink_waiter(w);
        w->woken = 1;
        event_active(w->ev, EV_TIMEOUT, 1); /* resumes it from the loop */
    }
    return 0;
}

static int l_is_set(lua_State *L)
{
    lua_pushboolean(L, check_latch(L)->set);
    return 1;
}

/* A waiting coroutine keeps its latch alive (it is on its stack), so a latch
 * collected has no waiters left; any left are let go, never touched again. */
static int l_gc(lua_State *L)
{
    struct latch *l = check_latch(L);
    while (l->head != NULL)
        unlink_waiter(l->head);
    return 0;
}

static const luaL_Reg methods[] = {
    {"wait", l_wait}, {"set", l_set}, {"is_set", l_is_set}, {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"new", l_new}, {NULL, NULL},
};

int luaopen_steeple_latch(lua_State *L)
{
    luaL_newmetatable(L, LATCH_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
