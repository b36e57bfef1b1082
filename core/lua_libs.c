/* lua_libs.c — opening steeple's Lua libraries (see lua_libs.h). */
#include "lua_libs.h"
#include "lmod.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>

static const luaL_Reg preloads[] = {
    {"cjson", luaopen_cjson},
    {"steeple", luaopen_steeple},
    {"steeple.log", luaopen_steeple_log},
    {"steeple.metrics", luaopen_steeple_metrics},
    {"steeple.crypto", luaopen_steeple_crypto},
    {"steeple.db", luaopen_steeple_db},
    {"steeple.ratelimit", luaopen_steeple_ratelimit},
    {"steeple.spool", luaopen_steeple_spool},
    {"steeple.http", luaopen_steeple_http},
    {"steeple.csv", luaopen_steeple_csv},
    {"steeple.latch", luaopen_steeple_latch},
    {NULL, NULL},
};

void steeple_openlibs(lua_State *L, const char *lua_dir)
{
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE); /* preload */
    for (const luaL_Reg *lib = preloads; lib->func; lib++) {
        lua_pushcfunction(L, lib->func);
        lua_setfield(L, -2, lib->name);
    }
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", lua_dir, lua_dir);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, ""); /* native modules come from the binary only */
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
}

lua_State *steeple_newstate(const char *lua_dir)
{
    lua_State *L = luaL_newstate();
    if (L != NULL)
        steeple_openlibs(L, lua_dir);
    return L;
}
