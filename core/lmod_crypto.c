/* lmod_crypto.c — the `steeple.crypto` module.
 *
 *   crypto.random(n)                    n random bytes (1..1024)
 *   crypto.sha256_hex(data)             SHA-256 as 64 lower-case hex digits
 *   crypto.password_hash(pw)            encoded argon2id hash; or nil, err
 *   crypto.password_verify(hash, pw)    true/false; or nil, err
 *
 * The password functions run on the worker's thread pool and suspend the
 * request meanwhile; "busy" means too many hashes are already in flight. */
#include "crypto.h"
#include "lmod.h"
#include "request.h"
#include "threadpool.h"
#include "worker.h"

#include <lauxlib.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PASSWORD_MAX 4096

struct pw_job {
    struct tp_job job; /* first: the pool hands this pointer back */
    struct request *r; /* NULL once the request has gone */
    int verify;
    int result; /* hash: 0 ok, -1 failed; verify: 1 match, 0 not */
    char hash[CRYPTO_PWHASH_LEN];
    size_t pwlen;
    char pw[]; /* wiped before free */
};

static void pw_free(struct pw_job *j)
{
    sodium_memzero(j->pw, j->pwlen);
    free(j);
}

static void pw_work(struct tp_job *job)
{
    struct pw_job *j = (struct pw_job *)job;
    if (j->verify)
        j->result = crypto_password_verify(j->hash, j->pw, j->pwlen);
    else
        j->result = crypto_password_hash(j->hash, j->pw, j->pwlen, CRYPTO_PWHASH_DEFAULT);
}

static int pw_retval(lua_State *L, void *data)
{
    struct pw_job *j = data;
    if (j->job.cancelled) {
        lua_pushnil(L);
        lua_pushliteral(L, "cancelled");
        return 2;
    }
    if (j->verify) {
        lua_pushboolean(L, j->result == 1);
        return 1;
    }
    if (j->result != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "out of memory");
        return 2;
    }
    lua_pushstring(L, j->hash);
    return 1;
}

static void pw_done(struct tp_job *job)
{
    struct pw_job *j = (struct pw_job *)job;
    struct request *r = j->r;
    if (r != NULL)
        request_resume(r, pw_retval, j);
    pw_free(j);
}

static void pw_cancel(void *data)
{
    struct pw_job *j = data;
    j->r = NULL; /* the pool still owns the job; pw_done frees it */
}

static int submit(lua_State *L, struct request *r, struct pw_job *j)
{
    j->r = r;
    j->job.work = pw_work;
    j->job.done = pw_done;
    if (threadpool_submit(request_worker(r)->pool, &j->job) != 0) {
        pw_free(j);
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    }
    request_suspend(r, pw_cancel, j);
    return lua_yield(L, 0);
}

static struct pw_job *new_job(lua_State *L, int pw_arg)
{
    size_t len;
    const char *pw = luaL_checklstring(L, pw_arg, &len);
    luaL_argcheck(L, len <= PASSWORD_MAX, pw_arg, "password too long");
    struct pw_job *j = calloc(1, sizeof *j + len + 1);
    if (j == NULL)
        return NULL;
    memcpy(j->pw, pw, len);
    j->pwlen = len;
    return j;
}

static int l_password_hash(lua_State *L)
{
    struct request *r = request_check(L, "crypto.password_hash");
    struct pw_job *j = new_job(L, 1);
    if (j == NULL)
        return luaL_error(L, "crypto.password_hash: out of memory");
    return submit(L, r, j);
}

static int l_password_verify(lua_State *L)
{
    struct request *r = request_check(L, "crypto.password_verify");
    size_t hlen;
    const char *hash = luaL_checklstring(L, 1, &hlen);
    if (hlen >= CRYPTO_PWHASH_LEN) {
        lua_pushboolean(L, 0); /* no hash we made is that long */
        return 1;
    }
    struct pw_job *j = new_job(L, 2);
    if (j == NULL)
        return luaL_error(L, "crypto.password_verify: out of memory");
    memcpy(j->hash, hash, hlen + 1);
    j->verify = 1;
    return submit(L, r, j);
}

static int l_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "between 1 and 1024 bytes");
    unsigned char buf[1024];
    crypto_random(buf, (size_t)n);
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

static int l_sha256_hex(lua_State *L)
{
    size_t n;
    const unsigned char *data = (const unsigned char *)luaL_checklstring(L, 1, &n);
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    crypto_hash_sha256(digest, data, n);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    lua_pushstring(L, hex);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"random", l_random},
    {"sha256_hex", l_sha256_hex},
    {"password_hash", l_password_hash},
    {"password_verify", l_password_verify},
    {NULL, NULL},
};

int luaopen_steeple_crypto(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
