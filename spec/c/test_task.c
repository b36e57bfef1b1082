/* test_task.c — the app's hooks as tasks: app.stop runs once and is ended at
 * its bound wherever it waits; scripts without it, or with a stop that is no
 * function. Each case builds a script state from a small app.lua in a
 * temporary directory (with lua/conf.lua and lua/netaddr.lua beside it, which
 * loading the configuration needs). */
#include "clock.h"
#include "host.h"
#include "lua_host.h"
#include "lua_libs.h"
#include "request.h"
#include "task.h"
#include "tap.h"
#include "watchdog.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    struct host h;
    struct request_set rs;
    char dir[64];
    char err[512];
};

static void on_idle(void *arg)
{
    struct fixture *f = arg;
    if (request_set_idle(&f->rs))
        event_base_loopexit(f->h.base, NULL);
}

static int write_file(const char *dir, const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return -1;
    int bad = fputs(text, fp) < 0;
    return fclose(fp) != 0 || bad ? -1 : 0;
}

static int copy_module(const char *dir, const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cp lua/%s %s/%s", name, dir, name);
    return system(cmd) == 0 ? 0 : -1;
}

/* Builds the host and its scripts from app_lua; returns 0, or -1 with the
 * reason in f->err (a script state that did not load). */
static int setup(struct fixture *f, const char *app_lua)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/steeple-task.XXXXXX");
    if (mkdtemp(f->dir) == NULL || copy_module(f->dir, "conf.lua") != 0 ||
        copy_module(f->dir, "netaddr.lua") != 0 || write_file(f->dir, "app.lua", app_lua) != 0) {
        snprintf(f->err, sizeof f->err, "cannot write the scripts");
        return -1;
    }
    f->h.lua_dir = f->dir;
    f->h.base = event_base_new();
    request_set_init(&f->rs, &f->h);
    f->rs.on_idle = on_idle;
    f->rs.idle_arg = f;
    f->rs.watchdog = watchdog_start(0.1, 5.0, request_overrun);
    f->h.requests = &f->rs;
    if (f->h.base == NULL || f->rs.watchdog == NULL)
        return -1;
    f->h.scripts = script_state_new(&f->h, steeple_newstate(f->dir), f->err, sizeof f->err);
    return f->h.scripts ? 0 : -1;
}

static void teardown(struct fixture *f)
{
    request_abort_all(&f->rs);
    if (f->h.scripts)
        script_state_unref(f->h.scripts);
    if (f->rs.watchdog)
        watchdog_stop(f->rs.watchdog);
    if (f->h.base)
        event_base_free(f->h.base);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        printf("# cannot remove %s\n", f->dir);
}

/* Runs the loop until nothing runs (or 10 s); returns the seconds it took. */
static double run_until_idle(struct fixture *f)
{
    double started = clock_mono();
    struct timeval limit = {10, 0};
    event_base_loopexit(f->h.base, &limit);
    event_base_dispatch(f->h.base);
    return clock_mono() - started;
}

/* package.loaded.app[field] as an integer (0 when it is none). */
static lua_Integer app_field(struct fixture *f, const char *field)
{
    lua_State *L = f->h.scripts->L;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* loaded */
    lua_getfield(L, -1, "app");                                /* loaded app */
    lua_getfield(L, -1, field);                                /* loaded app value */
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 3);
    return n;
}

static void stop_runs_once_to_its_end(void)
{
    struct fixture f;
    CHECK(setup(&f, "local steeple = require 'steeple'\n"
                    "local M = { stops = 0, handle = function() end }\n"
                    "function M.stop() steeple.sleep(50); M.stops = M.stops + 1 end\n"
                    "return M\n") == 0);
    if (f.h.scripts) {
        CHECK(task_stop(&f.rs, 5.0) == 0);
        CHECK(f.rs.nlive == 1);
        double took = run_until_idle(&f);
        CHECK(f.rs.nlive == 0);
        CHECK(app_field(&f, "stops") == 1);
        CHECK(took >= 0.04 && took < 5.0);
    }
    teardown(&f);
}

static void stop_is_ended_at_its_bound(void)
{
    struct fixture f;
    CHECK(setup(&f, "local steeple = require 'steeple'\n"
                    "local M = { reached = 0, closed = 0, handle = function() end }\n"
                    "function M.stop()\n"
                    "  local _ <close> = setmetatable({}, { __close = function() M.closed = 1 end })\n"
                    "  steeple.sleep(60000)\n"
                    "  M.reached = 1\n"
                    "end\n"
                    "return M\n") == 0);
    if (f.h.scripts) {
        CHECK(task_stop(&f.rs, 0.2) == 0);
        double took = run_until_idle(&f);
        CHECK(f.rs.nlive == 0);
        CHECK(took >= 0.15 && took < 5.0); /* the loop's own 10 s limit was not what ended it */
        CHECK(app_field(&f, "reached") == 0);
        CHECK(app_field(&f, "closed") == 1); /* its to-be-closed variables were closed */
    }
    teardown(&f);
}

static void scripts_without_stop(void)
{
    struct fixture f;
    CHECK(setup(&f, "return { handle = function() end }\n") == 0);
    if (f.h.scripts) {
        CHECK(f.h.scripts->stop_ref == LUA_NOREF);
        CHECK(task_stop(&f.rs, 1.0) == 1);
        CHECK(f.rs.nlive == 0);
    }
    teardown(&f);
}

static void stop_that_is_no_function_fails_the_load(void)
{
    struct fixture f;
    CHECK(setup(&f, "return { handle = function() end, stop = 1 }\n") != 0);
    CHECK(f.h.scripts == NULL);
    CHECK(strstr(f.err, "app.stop must be a function") != NULL);
    teardown(&f);
}

static const struct tap_case cases[] = {
    {"app.stop runs once, to its end", stop_runs_once_to_its_end},
    {"app.stop is ended at its bound, its to-be-closed variables closed", stop_is_ended_at_its_bound},
    {"scripts without app.stop: nothing starts", scripts_without_stop},
    {"an app.stop that is no function fails the load", stop_that_is_no_function_fails_the_load},
};

TAP_MAIN(cases)
