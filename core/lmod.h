/* lmod.h — the Lua modules the core provides (one lmod_<name>.c each). */
#ifndef STEEPLE_LMOD_H
#define STEEPLE_LMOD_H

#include <lua.h>

int luaopen_steeple(lua_State *L);         /* steeple: sleep, now, clock, worker */
int luaopen_steeple_log(lua_State *L);     /* steeple.log */
int luaopen_steeple_metrics(lua_State *L); /* steeple.metrics */
int luaopen_steeple_crypto(lua_State *L);  /* steeple.crypto */
int luaopen_steeple_db(lua_State *L);      /* steeple.db */
int luaopen_steeple_ratelimit(lua_State *L); /* steeple.ratelimit */
int luaopen_steeple_spool(lua_State *L);     /* steeple.spool */
int luaopen_steeple_http(lua_State *L);      /* steeple.http */
int luaopen_steeple_csv(lua_State *L);       /* steeple.csv */
int luaopen_steeple_latch(lua_State *L);     /* steeple.latch */

#endif
