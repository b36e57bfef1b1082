/* crypto.h — the core's cryptographic primitives (libsodium), free of Lua. */
#ifndef STEEPLE_CRYPTO_H
#define STEEPLE_CRYPTO_H

#include <stddef.h>

/* argon2id encoded hashes are at most this long, NUL included. */
#define CRYPTO_PWHASH_LEN 128

struct crypto_pwhash_params {
    unsigned long long opslimit; /* argon2id t */
    size_t memlimit;             /* bytes */
};

/* OWASP's minimum for argon2id: m=19 MiB, t=2, p=1. */
#define CRYPTO_PWHASH_DEFAULT ((struct crypto_pwhash_params){2, 19u * 1024 * 1024})

/* Initialises libsodium. Returns 0, or -1. */
int crypto_init(void) __attribute__((warn_unused_result));

void crypto_random(void *buf, size_t n);

/* Writes n random bytes as 2n lower-case hex digits plus NUL into out. */
void crypto_random_hex(char *out, size_t n);

/* Hashes a password into out (an encoded argon2id string). CPU- and
 * memory-heavy: call it on the thread pool only. Returns 0, or -1 when out of
 * memory. */
int crypto_password_hash(char out[CRYPTO_PWHASH_LEN], const char *pw, size_t len,
                         struct crypto_pwhash_params params)
    __attribute__((warn_unused_result));

/* Returns 1 when pw matches the encoded hash (a CRYPTO_PWHASH_LEN buffer
 * holding a NUL-terminated string), 0 when it does not or the hash
 * is malformed. Thread pool only. */
int crypto_password_verify(const char hash[CRYPTO_PWHASH_LEN], const char *pw, size_t len)
    __attribute__((warn_unused_result));

#endif
