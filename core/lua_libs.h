/* lua_libs.h — the libraries of every Lua state steeple makes: Lua's own,
 * cjson and the steeple.* modules (lmod.h), the way Lua's linit.c opens its
 * standard libraries. */
#ifndef STEEPLE_LUA_LIBS_H
#define STEEPLE_LUA_LIBS_H

struct lua_State;

/* Opens the standard libraries, preloads the steeple.* modules and cjson, and
 * sets package.path to lua_dir (package.cpath to nothing). */
void steeple_openlibs(struct lua_State *L, const char *lua_dir);

/* A new Lua state with steeple_openlibs done, or NULL when out of memory:
 * what script_state_new (lua_host.h) and config_load (config_load.h) take. */
struct lua_State *steeple_newstate(const char *lua_dir);

#endif
