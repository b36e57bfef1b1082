/* lmod_metrics.c — the `steeple.metrics` module.
 *
 *   metrics.inc(name [, labels [, n]])   counter name{labels} += n (default 1)
 *   metrics.set(name, labels, value)     gauge name{labels} = value (this worker)
 *   metrics.describe(name, kind, help [, label_sets])
 *                                        declares a family ("counter" or "gauge"):
 *                                        /metrics shows its HELP and TYPE from now
 *                                        on, and a sample for each label set (nil:
 *                                        one without labels), 0 until counted
 *   metrics.render()                     the Prometheus text of every worker
 *
 * labels is a table of string keys and string/number values, or nil.
 * describe never changes a value, so it may run again on every reload. */
#include "lmod.h"
#include "metrics.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

/* Builds the label text from the table at idx, keys sorted. Raises on misuse. */
static void label_text(lua_State *L, int idx, char *out, size_t cap)
{
    out[0] = '\0';
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    const char *keys[16];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        luaL_argcheck(L, lua_type(L, -2) == LUA_TSTRING && n < 16, idx,
                      "labels must be at most 16 string keys");
        keys[n++] = lua_tostring(L, -2); /* anchored by the table */
        lua_pop(L, 1);
    }
    for (int i = 1; i < n; i++) /* insertion sort: a handful of keys */
        for (int j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        char esc[128];
        lua_getfield(L, idx, keys[i]);
        const char *v = lua_tostring(L, -1);
        luaL_argcheck(L, v != NULL, idx, "label values must be strings or numbers");
        metrics_escape_label(esc, sizeof esc, v);
        lua_pop(L, 1);
        int w = snprintf(out + len, cap - len, "%s%s=\"%s\"", i ? "," : "", keys[i], esc);
        luaL_argcheck(L, w > 0 && (size_t)w < cap - len, idx, "labels too long");
        len += (size_t)w;
    }
}

static int l_inc(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    char labels[METRICS_LABELS_LEN];
    label_text(L, 2, labels, sizeof labels);
    lua_Integer n = luaL_optinteger(L, 3, 1);
    metrics_count(name, labels, n);
    return 0;
}

static int l_set(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    char labels[METRICS_LABELS_LEN];
    label_text(L, 2, labels, sizeof labels);
    metrics_gauge(name, labels, luaL_checkinteger(L, 3));
    return 0;
}

static int l_describe(lua_State *L)
{
    static const char *const kinds[] = {"counter", "gauge", NULL};
    static const enum metric_kind kind_of[] = {METRIC_COUNTER, METRIC_GAUGE};
    const char *name = luaL_checkstring(L, 1);
    enum metric_kind kind = kind_of[luaL_checkoption(L, 2, NULL, kinds)];
    const char *help = luaL_checkstring(L, 3);
    char labels[METRICS_LABELS_LEN];
    if (metrics_describe(name, kind, help) != 0)
        return luaL_error(L, "cannot declare metric %s (table full or text too long)", name);
    if (lua_isnoneornil(L, 4)) {
        metrics_series(name, "", "", kind);
        return 0;
    }
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 4);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 4, i); /* set */
        label_text(L, lua_absindex(L, -1), labels, sizeof labels);
        lua_pop(L, 1);
        metrics_series(name, "", labels, kind);
    }
    return 0;
}

/* A box owning the rendered C text, so an error while copying it into Lua
 * cannot leak it: its __gc frees whatever it still holds. */
static int box_gc(lua_State *L)
{
    char **box = luaL_checkudata(L, 1, "steeple.metrics.text");
    free(*box);
    *box = NULL;
    return 0;
}

static int l_render(lua_State *L)
{
    char **box = lua_newuserdatauv(L, sizeof *box, 0); /* box */
    *box = NULL;
    if (luaL_newmetatable(L, "steeple.metrics.text")) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    size_t len = 0;
    *box = metrics_render(&len);
    if (*box == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "metrics unavailable");
        return 2;
    }
    lua_pushlstring(L, *box, len); /* box text */
    free(*box);
    *box = NULL;
    return 1;
}

static const luaL_Reg funcs[] = {
    {"inc", l_inc}, {"set", l_set}, {"describe", l_describe}, {"render", l_render},
    {NULL, NULL},
};

int luaopen_steeple_metrics(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
