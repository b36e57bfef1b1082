/* lmod_log.c — the `steeple.log` module: JSON-line logging from Lua.
 *
 *   log.debug|info|warn|error(msg [, fields])
 *
 * fields is a table of string keys to strings, numbers or booleans; other
 * values are written as their type name. The running request's id is added.
 * Never pass bodies, passwords, tokens, emails or message text. */
#include "lmod.h"
#include "log.h"
#include "request.h"

#include <lauxlib.h>

static void add_field(struct log_line *l, lua_State *L, const char *key)
{
    switch (lua_type(L, -1)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        log_strn(l, key, s, n);
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, -1))
            log_int(l, key, lua_tointeger(L, -1));
        else
            log_num(l, key, lua_tonumber(L, -1));
        break;
    case LUA_TBOOLEAN:
        log_bool(l, key, lua_toboolean(L, -1));
        break;
    default:
        log_str(l, key, luaL_typename(L, -1));
        break;
    }
}

static int emit(lua_State *L, enum log_level level)
{
    const char *msg = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    if (!log_enabled(level))
        return 0;
    struct log_line l;
    log_begin(&l, level, msg);
    struct request *r = request_running(L);
    if (r != NULL)
        log_str(&l, "requestId", request_id(r));
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) { /* key value */
            if (lua_type(L, -2) == LUA_TSTRING)
                add_field(&l, L, lua_tostring(L, -2));
            lua_pop(L, 1);
        }
    }
    log_end(&l, level);
    return 0;
}

static int l_debug(lua_State *L) { return emit(L, LOG_DEBUG); }
static int l_info(lua_State *L) { return emit(L, LOG_INFO); }
static int l_warn(lua_State *L) { return emit(L, LOG_WARN); }
static int l_error(lua_State *L) { return emit(L, LOG_ERROR); }

static const luaL_Reg funcs[] = {
    {"debug", l_debug}, {"info", l_info}, {"warn", l_warn}, {"error", l_error}, {NULL, NULL},
};

int luaopen_steeple_log(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
