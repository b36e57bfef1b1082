/* lmod_ratelimit.c — the `steeple.ratelimit` module.
 *
 *   ratelimit.take(key, per_minute)   true, or false, retry_after
 *   ratelimit.address_key(address, ipv6_prefix)
 *                                     the bucket key of a client address (a
 *                                     short binary string: one per IPv6
 *                                     /ipv6_prefix, IPv4-mapped counting as
 *                                     IPv4), or nil when address is no IP address
 *
 * key is a string of at most 64 bytes (a client address), per_minute a number
 * of requests per minute (<= 0: unlimited). retry_after is whole seconds, >= 1.
 * The buckets are shared by all workers (see ratelimit.h); a non-string key, a
 * longer key or a non-number per_minute raises, and so does an ipv6_prefix
 * that is not an integer from 1 to 128. */
#include "clock.h"
#include "lmod.h"
#include "ratelimit.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

_Static_assert(RATELIMIT_KEY_MAX == 64, "update the messages below");

#define RETRY_MAX_S 1e9 /* a tiny per_minute can mean "never": clamp it */

/* Returns seconds rounded up to a whole number in [1, RETRY_MAX_S]. */
static lua_Integer retry_seconds(double seconds)
{
    double s = ceil(seconds);
    if (!(s >= 1)) /* also a NaN */
        s = 1;
    if (s > RETRY_MAX_S)
        s = RETRY_MAX_S;
    return (lua_Integer)s;
}

static int l_take(lua_State *L)
{
    luaL_argexpected(L, lua_type(L, 1) == LUA_TSTRING, 1, "string");
    size_t len;
    const char *key = lua_tolstring(L, 1, &len);
    luaL_argcheck(L, len <= RATELIMIT_KEY_MAX, 1, "key longer than 64 bytes");
    luaL_argexpected(L, lua_type(L, 2) == LUA_TNUMBER, 2, "number");
    double per_minute = (double)lua_tonumber(L, 2);
    double retry_after;
    if (ratelimit_take(key, len, per_minute, clock_mono(), &retry_after)) {
        lua_pushboolean(L, 1); /* true */
        return 1;
    }
    lua_pushboolean(L, 0);                          /* false */
    lua_pushinteger(L, retry_seconds(retry_after)); /* false retry_after */
    return 2;
}

static int l_address_key(lua_State *L)
{
    size_t len;
    const char *address = luaL_checklstring(L, 1, &len);
    lua_Integer prefix = luaL_checkinteger(L, 2);
    luaL_argcheck(L, prefix >= 1 && prefix <= 128, 2, "must be from 1 to 128");
    unsigned char key[RATELIMIT_ADDRESS_KEY_MAX];
    size_t n = strlen(address) == len ? ratelimit_address_key(address, (int)prefix, key) : 0;
    if (n == 0)
        lua_pushnil(L); /* nil */
    else
        lua_pushlstring(L, (const char *)key, n); /* key */
    return 1;
}

static const luaL_Reg funcs[] = {
    {"take", l_take},
    {"address_key", l_address_key},
    {NULL, NULL},
};

int luaopen_steeple_ratelimit(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
