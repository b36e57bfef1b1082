/* fuzz_app.h — a worker shell and the real script state, for the targets that
 * run the application's Lua (fuzz_webhook, fuzz_request). */
#ifndef STEEPLE_FUZZ_APP_H
#define STEEPLE_FUZZ_APP_H

#include "crypto.h"
#include "fuzz_util.h"
#include "log.h"
#include "lua_host.h"
#include "lua_libs.h"
#include "request.h"
#include "worker.h"

/* Writes config_text as the worker's config file and builds the script state
 * as worker_reload does: script_state_new (the configuration through
 * lua/conf.lua, lua/app.lua and every route module required, globals locked)
 * from the repository's lua/. Aborts when that fails: the harness is broken,
 * not the input. Leaves the state current in w->host.scripts and its limits in
 * w->host.cfg, and the line-coverage hook armed on its main thread. */
static inline struct script_state *fuzz_app_state(struct worker *w, const char *config_text)
{
    static char path[256];
    if (crypto_init() != 0)
        abort();
    snprintf(path, sizeof path, "%s/app-config.lua", fuzz_tmpdir());
    fuzz_write_file(path, config_text, strlen(config_text));
    w->host.lua_dir = fuzz_lua_dir();
    w->host.config_path = path;
    request_set_init(&w->requests, &w->host);
    w->host.requests = &w->requests;
    char err[2048];
    struct script_state *ss =
        script_state_new(&w->host, steeple_newstate(w->host.lua_dir), err, sizeof err);
    if (ss == NULL) {
        fprintf(stderr, "fuzz: cannot build the script state: %s\n", err);
        abort();
    }
    w->host.scripts = ss;
    w->host.cfg = ss->cfg;
    log_set_level((enum log_level)ss->cfg.log_level);
    fuzz_lua_hook_on(ss->L, 0);
    return ss;
}

/* Runs a Lua chunk (harness code, not the input) on L after the globals are
 * locked: it may only use locals and the globals that exist. Leaves its one
 * result on the stack. */
static inline void fuzz_app_chunk(lua_State *L, const char *code, const char *name)
{
    if (luaL_loadbuffer(L, code, strlen(code), name) != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz: %s: %s\n", name, lua_tostring(L, -1));
        abort();
    }
}

#endif
