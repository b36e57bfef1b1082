/* config_load.c — runs lua/conf.lua and copies what the core needs into a
 * struct config (see config_load.h). */
#include "config_load.h"
#include "log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Pushes cfg[section][key] (section may be NULL). Stack: +1. */
static int get(lua_State *L, int idx, const char *section, const char *key)
{
    if (section) {
        if (lua_getfield(L, idx, section) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return LUA_TNIL;
        }
        int t = lua_getfield(L, -1, key); /* section value */
        lua_remove(L, -2);
        return t;
    }
    return lua_getfield(L, idx, key);
}

static int read_number(lua_State *L, int idx, const char *section, const char *key,
                       double *out, char *err, size_t errlen)
{
    int ok = get(L, idx, section, key) == LUA_TNUMBER;
    if (ok)
        *out = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!ok)
        snprintf(err, errlen, "config: %s%s%s is missing or not a number", section ? section : "",
                 section ? "." : "", key);
    return ok ? 0 : -1;
}

static int read_string(lua_State *L, int idx, const char *section, const char *key, char *out,
                       size_t cap, int optional, char *err, size_t errlen)
{
    int t = get(L, idx, section, key);
    int ok = t == LUA_TSTRING && lua_rawlen(L, -1) < cap;
    if (ok)
        snprintf(out, cap, "%s", lua_tostring(L, -1));
    else if (optional && t == LUA_TNIL) {
        out[0] = '\0';
        ok = 1;
    }
    lua_pop(L, 1);
    if (!ok)
        snprintf(err, errlen, "config: %s%s%s is missing, not a string or too long",
                 section ? section : "", section ? "." : "", key);
    return ok ? 0 : -1;
}

static int read_boolean(lua_State *L, int idx, const char *section, const char *key, int *out,
                        char *err, size_t errlen)
{
    int ok = get(L, idx, section, key) == LUA_TBOOLEAN;
    if (ok)
        *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!ok)
        snprintf(err, errlen, "config: %s%s%s is missing or not a boolean",
                 section ? section : "", section ? "." : "", key);
    return ok ? 0 : -1;
}

static int read_db(lua_State *L, int idx, struct config_db *db, char *err, size_t errlen)
{
    double pool_max, server_max, min_idle, acquire_ms, connect_ms, statement_ms, failures;
    if (read_string(L, idx, "db", "url", db->url, sizeof db->url, 1, err, errlen) ||
        read_string(L, idx, "db", "tenant_urls", db->tenant_urls, sizeof db->tenant_urls, 1, err,
                    errlen) ||
        read_number(L, idx, "db", "pool_max", &pool_max, err, errlen) ||
        read_number(L, idx, "db", "server_max_connections", &server_max, err, errlen) ||
        read_number(L, idx, "db", "min_idle", &min_idle, err, errlen) ||
        read_number(L, idx, "db", "acquire_timeout_ms", &acquire_ms, err, errlen) ||
        read_number(L, idx, "db", "connect_timeout_ms", &connect_ms, err, errlen) ||
        read_number(L, idx, "db", "statement_timeout_ms", &statement_ms, err, errlen) ||
        read_number(L, idx, "db", "idle_timeout_s", &db->idle_timeout_s, err, errlen) ||
        read_number(L, idx, "db", "breaker_failures", &failures, err, errlen) ||
        read_number(L, idx, "db", "breaker_open_s", &db->breaker_open_s, err, errlen) ||
        read_boolean(L, idx, "db", "prepared_statements", &db->prepared_statements, err, errlen))
        return -1;
    db->pool_max = (int)pool_max;
    db->server_max_connections = (int)server_max;
    db->min_idle = (int)min_idle;
    db->acquire_timeout_s = acquire_ms / 1000.0;
    db->connect_timeout_s = connect_ms / 1000.0;
    db->statement_timeout_s = statement_ms / 1000.0;
    db->breaker_failures = (int)failures;
    return 0;
}

/* Reads what the core needs of auth.*: whether the keys are set, argon2id. */
static int read_auth(lua_State *L, int idx, struct config_auth *a, char *err, size_t errlen)
{
    double kib, iterations;
    if (read_number(L, idx, "auth", "argon2_memory_kib", &kib, err, errlen) ||
        read_number(L, idx, "auth", "argon2_iterations", &iterations, err, errlen))
        return -1;
    a->argon2_memory_bytes = (size_t)kib * 1024;
    a->argon2_iterations = (unsigned long long)iterations;
    a->has_jwt_secret = get(L, idx, "auth", "jwt_secret") == LUA_TSTRING;
    a->has_data_key = get(L, idx, "auth", "data_key") == LUA_TSTRING;
    lua_pop(L, 2);
    return 0;
}

int config_read(lua_State *L, int idx, struct config *out, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    double port, workers, threads, body, header, maxconn, per_address, depth, capacity;
    char level[16];
    struct config c;
    memset(&c, 0, sizeof c);
    if (read_string(L, idx, NULL, "env", c.env, sizeof c.env, 0, err, errlen) ||
        read_string(L, idx, NULL, "listen", c.listen, sizeof c.listen, 0, err, errlen) ||
        read_number(L, idx, NULL, "port", &port, err, errlen) ||
        read_number(L, idx, NULL, "workers", &workers, err, errlen) ||
        read_number(L, idx, NULL, "threads", &threads, err, errlen) ||
        read_number(L, idx, NULL, "shutdown_timeout_s", &c.shutdown_timeout_s, err, errlen) ||
        read_string(L, idx, "log", "level", level, sizeof level, 0, err, errlen) ||
        read_number(L, idx, "limits", "body_bytes", &body, err, errlen) ||
        read_number(L, idx, "limits", "header_bytes", &header, err, errlen) ||
        read_number(L, idx, "limits", "read_timeout_s", &c.limits.read_timeout_s, err, errlen) ||
        read_number(L, idx, "limits", "request_timeout_s", &c.limits.request_timeout_s, err,
                    errlen) ||
        read_number(L, idx, "limits", "max_connections", &maxconn, err, errlen) ||
        read_number(L, idx, "limits", "max_connections_per_address", &per_address, err, errlen) ||
        read_number(L, idx, "limits", "json_max_depth", &depth, err, errlen) ||
        read_string(L, idx, "bench", "plain_path", c.plain_path, sizeof c.plain_path, 1, err,
                    errlen) ||
        read_string(L, idx, "spool", "dir", c.spool_dir, sizeof c.spool_dir, 0, err, errlen) ||
        read_db(L, idx, &c.db, err, errlen) || read_auth(L, idx, &c.auth, err, errlen) ||
        read_number(L, idx, "tenants", "idle_s", &c.tenants.idle_s, err, errlen) ||
        read_number(L, idx, "tenants", "cache_ttl_s", &c.tenants.cache_ttl_s, err, errlen) ||
        read_number(L, idx, "tenants", "capacity", &capacity, err, errlen))
        return -1;
    c.tenants.capacity = (int)capacity;
    c.port = (int)port;
    c.workers = (int)workers;
    c.threads = (int)threads;
    c.log_level = log_level_parse(level);
    c.limits.body_bytes = (long)body;
    c.limits.header_bytes = (long)header;
    c.limits.max_connections = (int)maxconn;
    c.limits.max_connections_per_address = (int)per_address;
    c.limits.json_max_depth = (int)depth;
    if (c.log_level < 0) {
        snprintf(err, errlen, "config: log.level '%s' is not a level", level);
        return -1;
    }
    *out = c;
    return 0;
}

void config_resolve(struct config *cfg)
{
    if (cfg->workers <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n > 0 ? (int)n : 1;
    }
}

void config_push(lua_State *L, const char *path)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "conf");
    lua_call(L, 1, 1); /* conf */
    lua_getfield(L, -1, "load");
    if (path)
        lua_pushstring(L, path);
    else
        lua_pushnil(L);
    lua_getglobal(L, "os");
    lua_getfield(L, -1, "getenv");
    lua_remove(L, -2);
    lua_call(L, 2, 2); /* conf cfg|nil err */
    if (lua_isnil(L, -2))
        lua_error(L);
    lua_pop(L, 1);
    lua_remove(L, -2); /* cfg */
}

struct load_args {
    const char *path;
    struct config *out;
    char *err;
    size_t errlen;
};

static int load(lua_State *L)
{
    struct load_args *a = lua_touserdata(L, 1);
    config_push(L, a->path);
    if (config_read(L, -1, a->out, a->err, a->errlen) != 0)
        return luaL_error(L, "%s", a->err);
    return 0;
}

int config_load(lua_State *L, const char *path, struct config *out, char *err, size_t errlen)
{
    if (L == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct load_args a = {path, out, err, errlen};
    lua_pushcfunction(L, load);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 0, 0);
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "config: loading failed");
    }
    lua_close(L);
    return rc == LUA_OK ? 0 : -1;
}
