/* lmod_crypto.c — the `steeple.crypto` module.
 *
 *   crypto.random(n)                    n random bytes (1..1024)
 *   crypto.sha256_hex(data)             SHA-256 as 64 lower-case hex digits
 *   crypto.password_hash(pw)            encoded argon2id hash; or nil, err
 *   crypto.password_verify(hash, pw)    true/false; or nil, err
 *   crypto.hmac_sha256(key, data)       32 raw bytes
 *   crypto.equal(a, b)                  true/false, constant time for equal lengths
 *   crypto.base64_encode(s)             standard alphabet, padded
 *   crypto.base64_decode(s)             bytes; or nil on bad input
 *   crypto.base64url_encode(s)          URL-safe alphabet, unpadded
 *   crypto.base64url_decode(s)          bytes; or nil on bad input
 *   crypto.derive_key(master, id, ctx)  32-byte subkey id (integer >= 0) of a
 *                                       32-byte master for an 8-byte context
 *   crypto.blind_index(key, data)       32 raw bytes: keyed BLAKE2b, 32-byte key
 *   crypto.ed25519_verify(pk, sig, msg) true when sig (64 bytes) signs msg for the 32-byte key pk
 *   crypto.seal(key, plaintext [, ad])  nonce..ciphertext..tag (XChaCha20-
 *                                       Poly1305, 32-byte key, 40 bytes longer)
 *   crypto.open(key, box [, ad])        plaintext; or nil, "cannot decrypt"
 *   crypto.jwt_sign(key, payload)       HS256 token for a JSON payload
 *   crypto.jwt_verify(key, token)       payload JSON; or nil, "malformed" |
 *                                       "algorithm" | "signature" (exp and
 *                                       other claims are the caller's to check)
 *
 * Wrong argument types and key sizes raise; bad input to decode, open and
 * jwt_verify returns nil. JWT keys must be at least 32 bytes.
 *
 * The password functions run on the worker's thread pool and suspend the
 * request meanwhile; "busy" means too many hashes are already in flight. */
#include "crypto.h"
#include "host.h"
#include "jwt.h"
#include "lmod.h"
#include "request.h"
#include "threadpool.h"

#include <lauxlib.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PASSWORD_MAX 4096

struct pw_job {
    struct tp_job job; /* first: the pool hands this pointer back */
    struct request *r; /* NULL once the request has gone */
    int verify;
    struct crypto_pwhash_params params; /* auth.argon2_*, copied at submit */
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
        j->result = crypto_password_hash(j->hash, j->pw, j->pwlen, j->params);
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
    const struct config_auth *auth = &request_host(r)->cfg.auth;
    j->r = r;
    j->params.opslimit = auth->argon2_iterations;
    j->params.memlimit = auth->argon2_memory_bytes;
    j->job.work = pw_work;
    j->job.done = pw_done;
    if (threadpool_submit(request_host(r)->pool, &j->job) != 0) {
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

/* The len-byte string at argument arg, or raises unless it is exactly len
 * bytes long. */
static const unsigned char *check_key(lua_State *L, int arg, size_t len)
{
    size_t n;
    const char *s = luaL_checklstring(L, arg, &n);
    if (n != len)
        luaL_argerror(L, arg, lua_pushfstring(L, "must be %d bytes", (int)len));
    return (const unsigned char *)s;
}

/* Pushes the n bytes at secret, then wipes them. (If the push raises for
 * lack of memory the wipe is skipped; the value was bound for the Lua heap
 * anyway.) */
static void push_secret(lua_State *L, unsigned char *secret, size_t n)
{
    lua_pushlstring(L, (const char *)secret, n); /* +1 */
    sodium_memzero(secret, n);
}

static int l_hmac_sha256(lua_State *L)
{
    size_t keylen, len;
    const char *key = luaL_checklstring(L, 1, &keylen);
    const char *data = luaL_checklstring(L, 2, &len);
    unsigned char mac[CRYPTO_HMAC_BYTES];
    crypto_hmac_sha256(mac, (const unsigned char *)key, keylen, data, len);
    lua_pushlstring(L, (const char *)mac, sizeof mac);
    return 1;
}

static int l_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, crypto_equal(a, alen, b, blen));
    return 1;
}

static int b64_encode(lua_State *L, enum crypto_base64 variant)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t n = crypto_base64_encoded_len(len, variant);
    luaL_argcheck(L, n < SIZE_MAX, 1, "string too long");
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n + 1); /* may push a box */
    if (crypto_base64_encode(out, n + 1, s, len, variant) != 0)
        abort(); /* sized above */
    luaL_pushresultsize(&b, n); /* the encoding, without its NUL */
    return 1;
}

static int b64_decode(lua_State *L, enum crypto_base64 variant)
{
    size_t len, n;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t max = crypto_base64_decoded_max(len);
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, max); /* may push a box */
    if (crypto_base64_decode(out, max, &n, s, len, variant) != 0) {
        lua_pushnil(L); /* the abandoned box, if any, is garbage */
        return 1;
    }
    luaL_pushresultsize(&b, n);
    return 1;
}

static int l_base64_encode(lua_State *L)
{
    return b64_encode(L, CRYPTO_BASE64);
}

static int l_base64_decode(lua_State *L)
{
    return b64_decode(L, CRYPTO_BASE64);
}

static int l_base64url_encode(lua_State *L)
{
    return b64_encode(L, CRYPTO_BASE64URL);
}

static int l_base64url_decode(lua_State *L)
{
    return b64_decode(L, CRYPTO_BASE64URL);
}

static int l_derive_key(lua_State *L)
{
    const unsigned char *master = check_key(L, 1, CRYPTO_KEY_BYTES);
    lua_Integer id = luaL_checkinteger(L, 2);
    luaL_argcheck(L, id >= 0, 2, "must be >= 0");
    size_t ctxlen;
    const char *ctx = luaL_checklstring(L, 3, &ctxlen);
    luaL_argcheck(L, ctxlen == CRYPTO_KDF_CONTEXT_BYTES, 3, "must be 8 bytes");
    unsigned char key[CRYPTO_KEY_BYTES];
    crypto_derive_key(key, master, (uint64_t)id, ctx);
    push_secret(L, key, sizeof key);
    return 1;
}

/* ed25519_verify(public_key32, signature, message): a signature that is not
 * 64 bytes is simply not valid (it comes from the network). */
static int l_ed25519_verify(lua_State *L)
{
    const unsigned char *pk = check_key(L, 1, CRYPTO_ED25519_PUBLIC_BYTES);
    size_t siglen, len;
    const unsigned char *sig = (const unsigned char *)luaL_checklstring(L, 2, &siglen);
    const char *msg = luaL_checklstring(L, 3, &len);
    lua_pushboolean(L, siglen == CRYPTO_ED25519_SIG_BYTES && crypto_ed25519_verify(sig, msg, len, pk));
    return 1;
}

static int l_blind_index(lua_State *L)
{
    const unsigned char *key = check_key(L, 1, CRYPTO_KEY_BYTES);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    unsigned char out[CRYPTO_KEY_BYTES];
    crypto_blind_index(out, key, data, len);
    push_secret(L, out, sizeof out);
    return 1;
}

static int l_seal(lua_State *L)
{
    const unsigned char *key = check_key(L, 1, CRYPTO_KEY_BYTES);
    size_t len, adlen;
    const char *msg = luaL_checklstring(L, 2, &len);
    const char *ad = luaL_optlstring(L, 3, NULL, &adlen);
    luaL_argcheck(L, len <= SIZE_MAX - CRYPTO_SEAL_OVERHEAD, 2, "too long");
    luaL_Buffer b;
    unsigned char *box = (unsigned char *)luaL_buffinitsize(L, &b, len + CRYPTO_SEAL_OVERHEAD);
    if (crypto_seal(box, key, msg, len, ad, adlen) != 0)
        return luaL_argerror(L, 2, "too long"); /* nothing of ours to free */
    luaL_pushresultsize(&b, len + CRYPTO_SEAL_OVERHEAD);
    return 1;
}

static int l_open(lua_State *L)
{
    const unsigned char *key = check_key(L, 1, CRYPTO_KEY_BYTES);
    size_t boxlen, adlen, len;
    const char *box = luaL_checklstring(L, 2, &boxlen);
    const char *ad = luaL_optlstring(L, 3, NULL, &adlen);
    size_t max = boxlen >= CRYPTO_SEAL_OVERHEAD ? boxlen - CRYPTO_SEAL_OVERHEAD : 0;
    luaL_Buffer b;
    unsigned char *msg = (unsigned char *)luaL_buffinitsize(L, &b, max); /* may push a box */
    if (crypto_open(msg, &len, key, (const unsigned char *)box, boxlen, ad, adlen) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "cannot decrypt");
        return 2;
    }
    luaL_pushresultsize(&b, len);
    sodium_memzero(&b, sizeof b); /* its inline storage may hold the plaintext */
    return 1;
}

/* The JWT key at argument 1, or raises unless it has at least 32 bytes. */
static const unsigned char *check_jwt_key(lua_State *L, size_t *len)
{
    const char *key = luaL_checklstring(L, 1, len);
    luaL_argcheck(L, *len >= CRYPTO_KEY_BYTES, 1, "must be at least 32 bytes");
    return (const unsigned char *)key;
}

static int l_jwt_sign(lua_State *L)
{
    size_t keylen, len, n;
    const unsigned char *key = check_jwt_key(L, &keylen);
    const char *payload = luaL_checklstring(L, 2, &len);
    char token[JWT_MAX_TOKEN + 1];
    if (jwt_sign(key, keylen, payload, len, token, sizeof token, &n) != 0)
        return luaL_argerror(L, 2, "payload too large for a token");
    lua_pushlstring(L, token, n);
    return 1;
}

static int l_jwt_verify(lua_State *L)
{
    size_t keylen, len, n;
    const unsigned char *key = check_jwt_key(L, &keylen);
    luaL_checktype(L, 2, LUA_TSTRING); /* no number coercion */
    const char *token = lua_tolstring(L, 2, &len);
    char payload[JWT_MAX_TOKEN];
    enum jwt_result r = jwt_verify(key, keylen, token, len, payload, sizeof payload, &n);
    if (r != JWT_OK) {
        lua_pushnil(L);
        lua_pushstring(L, jwt_result_name(r));
        return 2;
    }
    lua_pushlstring(L, payload, n);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"random", l_random},
    {"sha256_hex", l_sha256_hex},
    {"password_hash", l_password_hash},
    {"password_verify", l_password_verify},
    {"hmac_sha256", l_hmac_sha256},
    {"equal", l_equal},
    {"base64_encode", l_base64_encode},
    {"base64_decode", l_base64_decode},
    {"base64url_encode", l_base64url_encode},
    {"base64url_decode", l_base64url_decode},
    {"derive_key", l_derive_key},
    {"blind_index", l_blind_index},
    {"ed25519_verify", l_ed25519_verify},
    {"seal", l_seal},
    {"open", l_open},
    {"jwt_sign", l_jwt_sign},
    {"jwt_verify", l_jwt_verify},
    {NULL, NULL},
};

int luaopen_steeple_crypto(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
