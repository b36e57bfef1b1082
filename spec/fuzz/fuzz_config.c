/* fuzz_config.c — configuration loading (core/config_load.c, lua/conf.lua).
 *
 * Feeds the input as the content of a config.lua file (a tmpfs file), loaded
 * the way config_load() and the script states load it: steeple_openlibs, then
 * config_push (conf.load(path, os.getenv)) and config_read under a pcall. The
 * harness builds that Lua state itself so that it can cap it: an allocator
 * that refuses past 64 MiB, and a hook that raises after ~200k VM
 * instructions (`while true do end` in a config file). The environment
 * variables conf.lua reads are cleared first, so the file alone decides.
 * When that run ends (success or a "config:" error), the same file goes
 * through the real config_load() too.
 * Asserts:
 *   - loading returns a config or an error string; unless a fuzz limit
 *     stopped it, the error starts with "config:" (conf.lua's messages, or
 *     config_read's);
 *   - every accepted config is inside the schema's ranges as the core reads
 *     it (port 1..65535, workers 0..256, threads 1..64, limits, log level,
 *     env, non-empty listen, NUL-terminated strings...);
 *   - config_load() agrees: the same struct config, or the same message. */
#include "config_load.h"
#include "lua_libs.h"
#include "fuzz_util.h"
#include "log.h"
#include "lua_host.h"

#include <math.h>

#define MEMORY_CAP (64u << 20)
#define INSTRUCTIONS 200000

static char path[128];

/* The variables lua/conf.lua reads (its schema's env fields). */
static const char *const env_vars[] = {
    "STEEPLE_ENV", "STEEPLE_LISTEN", "PORT", "STEEPLE_WORKERS", "DATABASE_URL",
    "STEEPLE_TENANT_DATABASE_URLS", "STEEPLE_JWT_SECRET", "STEEPLE_DATA_KEY",
    "STEEPLE_AUTH_RATE_PER_MIN", "TELNYX_PUBLIC_KEY", "TELNYX_API_KEY", "TELNYX_API_BASE",
    "STEEPLE_SPOOL_DIR",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        unsetenv(env_vars[i]);
    snprintf(path, sizeof path, "%s/config.lua", fuzz_tmpdir());
    return 0;
}

struct load_args {
    struct config *out;
    char *err;
    size_t errlen;
};

/* config_load()'s body, on our capped state. */
static int load(lua_State *L)
{
    struct load_args *a = lua_touserdata(L, 1);
    config_push(L, path);
    if (config_read(L, -1, a->out, a->err, a->errlen) != 0)
        return luaL_error(L, "%s", a->err);
    return 0;
}

/* Copies s without the digits of "0x..." addresses (tostring of a table
 * raised as an error differs from one state to the next). */
static void without_addresses(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    while (*s && n + 1 < cap) {
        if (s[0] == '0' && s[1] == 'x') {
            s += 2;
            while ((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))
                s++;
            continue;
        }
        out[n++] = *s++;
    }
    out[n] = '\0';
}

static int terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

static void check_config(const struct config *c)
{
    FUZZ_CHECK(strcmp(c->env, "development") == 0 || strcmp(c->env, "production") == 0,
               "env '%.16s'", c->env);
    FUZZ_CHECK(terminated(c->listen, sizeof c->listen) && c->listen[0], "listen");
    FUZZ_CHECK(c->port >= 1 && c->port <= 65535, "port %d", c->port);
    FUZZ_CHECK(c->workers >= 0 && c->workers <= 256, "workers %d", c->workers);
    FUZZ_CHECK(c->threads >= 1 && c->threads <= 64, "threads %d", c->threads);
    FUZZ_CHECK(c->shutdown_timeout_s >= 0 && c->shutdown_timeout_s <= 3600, "shutdown_timeout_s");
    FUZZ_CHECK(c->log_level >= LOG_DEBUG && c->log_level <= LOG_ERROR, "log_level %d",
               c->log_level);
    const struct config_limits *l = &c->limits;
    FUZZ_CHECK(l->body_bytes >= 1 && l->body_bytes <= 1073741824L, "body_bytes %ld",
               l->body_bytes);
    FUZZ_CHECK(l->header_bytes >= 1024 && l->header_bytes <= 1048576L, "header_bytes");
    FUZZ_CHECK(l->read_timeout_s > 0 && l->read_timeout_s <= 3600, "read_timeout_s");
    FUZZ_CHECK(l->request_timeout_s > 0 && l->request_timeout_s <= 3600, "request_timeout_s");
    FUZZ_CHECK(l->max_connections >= 1 && l->max_connections <= 1000000, "max_connections");
    FUZZ_CHECK(l->max_connections_per_address >= 0 && l->max_connections_per_address <= 1000000,
               "max_connections_per_address");
    FUZZ_CHECK(l->json_max_depth >= 1 && l->json_max_depth <= 1000, "json_max_depth");
    const struct config_db *d = &c->db;
    FUZZ_CHECK(terminated(d->url, sizeof d->url) && terminated(d->tenant_urls, sizeof d->tenant_urls),
               "db urls");
    FUZZ_CHECK(d->pool_max >= 1 && d->pool_max <= 1000, "pool_max");
    FUZZ_CHECK(d->server_max_connections >= 1 && d->min_idle >= 0 && d->min_idle <= 1000,
               "db counts");
    FUZZ_CHECK(d->acquire_timeout_s > 0 && d->connect_timeout_s > 0 && d->statement_timeout_s > 0,
               "db timeouts");
    FUZZ_CHECK(d->idle_timeout_s >= 0 && d->breaker_failures >= 1 && d->breaker_open_s > 0,
               "db breaker");
    FUZZ_CHECK(c->tenants.capacity >= 1 && c->tenants.idle_s > 0 && c->tenants.cache_ttl_s >= 0,
               "tenants");
    FUZZ_CHECK(c->auth.argon2_iterations >= 1 && c->auth.argon2_iterations <= 20 &&
                   c->auth.argon2_memory_bytes >= 1024u * 1024 &&
                   c->auth.argon2_memory_bytes <= 4194304ull * 1024,
               "argon2");
    FUZZ_CHECK(terminated(c->plain_path, sizeof c->plain_path) &&
                   (c->plain_path[0] == '\0' || c->plain_path[0] == '/'),
               "plain_path");
    FUZZ_CHECK(terminated(c->spool_dir, sizeof c->spool_dir) && c->spool_dir[0], "spool_dir");
}

/* 0 with *out filled, 1 with a clean error in err, 2 when a fuzz limit
 * (instructions, memory) stopped the load. */
static int load_capped(struct config *out, char *err, size_t errlen)
{
    struct fuzz_lua_budget budget = {0, MEMORY_CAP};
    lua_State *L = lua_newstate(fuzz_lua_alloc, &budget);
    if (L == NULL)
        abort();
    steeple_openlibs(L, fuzz_lua_dir());
    fuzz_lua_hook_on(L, INSTRUCTIONS);
    struct load_args a = {out, err, errlen};
    lua_pushcfunction(L, load);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 0, 0);
    int result = 0;
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(not a string)");
        int limited = fuzz_lua_budget_spent() || rc == LUA_ERRMEM ||
                      strstr(err, "not enough memory") != NULL ||
                      strstr(err, "stack overflow") != NULL;
        result = limited ? 2 : 1;
        if (!limited)
            FUZZ_CHECK(msg != NULL && strncmp(msg, "config:", 7) == 0,
                       "loading failed without a config: message: %s", err);
    }
    lua_close(L);
    return result;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write_file(path, data, size);
    struct config mine, real;
    char err[1024] = "", real_err[1024] = "";
    memset(&mine, 0, sizeof mine);
    int r = load_capped(&mine, err, sizeof err);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_config: %s%s\n", r == 0 ? "loaded" : r == 1 ? "refused: " : "stopped: ",
                r ? err : "");
    if (r == 2)
        return 0; /* a runaway file: the real loader has no limit to stop it */
    if (r == 0)
        check_config(&mine);
    memset(&real, 0, sizeof real);
    int rc = config_load(steeple_newstate(fuzz_lua_dir()), path, &real, real_err, sizeof real_err);
    if (r == 0) {
        FUZZ_CHECK(rc == 0, "config_load refused what loaded here: %s", real_err);
        FUZZ_CHECK(memcmp(&mine, &real, sizeof mine) == 0, "config_load read another config");
    } else {
        FUZZ_CHECK(rc != 0, "config_load accepted a config refused here: %s", err);
        char a[1024], b[1024];
        without_addresses(a, sizeof a, err);
        without_addresses(b, sizeof b, real_err);
        FUZZ_CHECK(strcmp(a, b) == 0, "messages differ:\n  %s\n  %s", err, real_err);
    }
    return 0;
}
