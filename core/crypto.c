/* crypto.c — libsodium wrappers (see crypto.h). */
#include "crypto.h"

#include <sodium.h>
#include <string.h>

int crypto_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

void crypto_random(void *buf, size_t n)
{
    randombytes_buf(buf, n);
}

void crypto_random_hex(char *out, size_t n)
{
    unsigned char raw[64];
    while (n > 0) {
        size_t chunk = n < sizeof raw ? n : sizeof raw;
        randombytes_buf(raw, chunk);
        sodium_bin2hex(out, chunk * 2 + 1, raw, chunk);
        out += chunk * 2;
        n -= chunk;
    }
    *out = '\0';
}

int crypto_password_hash(char out[CRYPTO_PWHASH_LEN], const char *pw, size_t len,
                         struct crypto_pwhash_params params)
{
    _Static_assert(crypto_pwhash_STRBYTES <= CRYPTO_PWHASH_LEN, "hash buffer too small");
    return crypto_pwhash_str_alg(out, pw, len, params.opslimit, params.memlimit,
                                 crypto_pwhash_ALG_ARGON2ID13) == 0
               ? 0
               : -1;
}

int crypto_password_verify(const char hash[CRYPTO_PWHASH_LEN], const char *pw, size_t len)
{
    if (memchr(hash, '\0', CRYPTO_PWHASH_LEN) == NULL)
        return 0;
    return crypto_pwhash_str_verify(hash, pw, len) == 0;
}
