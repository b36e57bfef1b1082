/* crypto.h — the core's cryptographic primitives (libsodium), free of Lua. */
#ifndef STEEPLE_CRYPTO_H
#define STEEPLE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/* argon2id encoded hashes are at most this long, NUL included. */
#define CRYPTO_PWHASH_LEN 128

struct crypto_pwhash_params {
    unsigned long long opslimit; /* argon2id t */
    size_t memlimit;             /* bytes */
};


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

#define CRYPTO_HMAC_BYTES 32        /* HMAC-SHA256 output */
#define CRYPTO_KEY_BYTES 32         /* derive_key, blind_index and seal keys */
#define CRYPTO_KDF_CONTEXT_BYTES 8  /* derive_key context: exactly 8 bytes */
#define CRYPTO_SEAL_NONCE_BYTES 24
#define CRYPTO_SEAL_TAG_BYTES 16
/* A sealed box is nonce || ciphertext || tag: this much longer than the plaintext. */
#define CRYPTO_SEAL_OVERHEAD (CRYPTO_SEAL_NONCE_BYTES + CRYPTO_SEAL_TAG_BYTES)

enum crypto_base64 {
    CRYPTO_BASE64,    /* RFC 4648 §4: '+' '/', padded with '=' */
    CRYPTO_BASE64URL, /* RFC 4648 §5: '-' '_', no padding */
};

/* Overwrites the n bytes at p with zeros, in a way the compiler keeps. */
void crypto_wipe(void *p, size_t n);

/* Writes HMAC-SHA256(key, data) into out. Keys of any length work (longer
 * than 64 bytes are hashed first, per RFC 2104). */
void crypto_hmac_sha256(unsigned char out[CRYPTO_HMAC_BYTES], const unsigned char *key,
                        size_t keylen, const void *data, size_t len);

/* Returns 1 when a and b hold the same bytes, else 0. Constant time in the
 * contents for equal lengths; different lengths return 0 at once (the
 * length is not secret). */
int crypto_equal(const void *a, size_t alen, const void *b, size_t blen)
    __attribute__((warn_unused_result));

/* Writes into out subkey number id of master, for the purpose named by
 * context (exactly CRYPTO_KDF_CONTEXT_BYTES bytes, not a C string). The same
 * inputs always give the same subkey. */
void crypto_derive_key(unsigned char out[CRYPTO_KEY_BYTES],
                       const unsigned char master[CRYPTO_KEY_BYTES], uint64_t id,
                       const char context[CRYPTO_KDF_CONTEXT_BYTES]);

/* Writes keyed BLAKE2b-256(data) into out: a deterministic index for
 * looking up encrypted values without revealing them to whoever lacks key. */
/* Ed25519 (libsodium crypto_sign_verify_detached): 1 when sig is a valid
 * signature of msg by the public key pk, else 0. */
#define CRYPTO_ED25519_PUBLIC_BYTES 32
#define CRYPTO_ED25519_SIG_BYTES 64
int crypto_ed25519_verify(const unsigned char sig[CRYPTO_ED25519_SIG_BYTES], const void *msg,
                          size_t len, const unsigned char pk[CRYPTO_ED25519_PUBLIC_BYTES])
    __attribute__((warn_unused_result));

void crypto_blind_index(unsigned char out[CRYPTO_KEY_BYTES],
                        const unsigned char key[CRYPTO_KEY_BYTES], const void *data,
                        size_t len);

/* Encrypts msg with XChaCha20-Poly1305 under key and a fresh random nonce,
 * authenticating ad too (ad may be NULL when adlen is 0). box must hold
 * len + CRYPTO_SEAL_OVERHEAD bytes; it receives nonce || ciphertext || tag.
 * Returns 0, or -1 when len is too large for the cipher. */
int crypto_seal(unsigned char *box, const unsigned char key[CRYPTO_KEY_BYTES],
                const void *msg, size_t len, const void *ad, size_t adlen)
    __attribute__((warn_unused_result));

/* Decrypts a box made by crypto_seal with the same key and ad. msg must hold
 * boxlen - CRYPTO_SEAL_OVERHEAD bytes. Returns 0 with the plaintext length
 * in *msglen, or -1 when the box is shorter than CRYPTO_SEAL_OVERHEAD or
 * fails authentication (wrong key, wrong ad, altered box); msg then holds
 * no plaintext. */
int crypto_open(unsigned char *msg, size_t *msglen, const unsigned char key[CRYPTO_KEY_BYTES],
                const unsigned char *box, size_t boxlen, const void *ad, size_t adlen)
    __attribute__((warn_unused_result));

/* The length of the base64 encoding of len bytes, NUL excluded, or SIZE_MAX
 * when that does not fit in a size_t. */
size_t crypto_base64_encoded_len(size_t len, enum crypto_base64 variant);

/* At least as many bytes as any valid len-character encoding decodes to. */
size_t crypto_base64_decoded_max(size_t len);

/* Writes the base64 encoding of bin plus a NUL into out. Returns 0, or -1
 * (out untouched) when cap < crypto_base64_encoded_len(len, variant) + 1. */
int crypto_base64_encode(char *out, size_t cap, const void *bin, size_t len,
                         enum crypto_base64 variant)
    __attribute__((warn_unused_result));

/* Decodes the len characters at b64 (no NUL needed) into out. The whole
 * input must be canonical base64 of the variant: no whitespace, no trailing
 * characters, padding exactly where CRYPTO_BASE64 needs it and never in
 * CRYPTO_BASE64URL, unused trailing bits zero. Returns 0 with the decoded
 * length in *outlen, or -1 on bad input or when cap is too small (size it
 * with crypto_base64_decoded_max). */
int crypto_base64_decode(unsigned char *out, size_t cap, size_t *outlen, const char *b64,
                         size_t len, enum crypto_base64 variant)
    __attribute__((warn_unused_result));

#endif
