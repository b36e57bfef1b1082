/* crypto.c — libsodium wrappers (see crypto.h). */
#include "crypto.h"

#include <sodium.h>
#include <stdlib.h>
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

void crypto_wipe(void *p, size_t n)
{
    sodium_memzero(p, n);
}

void crypto_hmac_sha256(unsigned char out[CRYPTO_HMAC_BYTES], const unsigned char *key,
                        size_t keylen, const void *data, size_t len)
{
    _Static_assert(crypto_auth_hmacsha256_BYTES == CRYPTO_HMAC_BYTES, "HMAC size");
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, data, len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st); /* holds the key-derived pads */
}

int crypto_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return 0;
    return alen == 0 || sodium_memcmp(a, b, alen) == 0;
}

void crypto_derive_key(unsigned char out[CRYPTO_KEY_BYTES],
                       const unsigned char master[CRYPTO_KEY_BYTES], uint64_t id,
                       const char context[CRYPTO_KDF_CONTEXT_BYTES])
{
    _Static_assert(crypto_kdf_KEYBYTES == CRYPTO_KEY_BYTES, "KDF key size");
    _Static_assert(crypto_kdf_CONTEXTBYTES == CRYPTO_KDF_CONTEXT_BYTES, "KDF context size");
    if (crypto_kdf_derive_from_key(out, CRYPTO_KEY_BYTES, id, context, master) != 0)
        abort(); /* fails only for an out-of-range subkey length */
}

void crypto_blind_index(unsigned char out[CRYPTO_KEY_BYTES],
                        const unsigned char key[CRYPTO_KEY_BYTES], const void *data,
                        size_t len)
{
    if (crypto_generichash(out, CRYPTO_KEY_BYTES, data, len, key, CRYPTO_KEY_BYTES) != 0)
        abort(); /* fails only for out-of-range output or key lengths */
}

int crypto_seal(unsigned char *box, const unsigned char key[CRYPTO_KEY_BYTES],
                const void *msg, size_t len, const void *ad, size_t adlen)
{
    _Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == CRYPTO_SEAL_NONCE_BYTES,
                   "nonce size");
    _Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == CRYPTO_SEAL_TAG_BYTES,
                   "tag size");
    _Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == CRYPTO_KEY_BYTES, "key size");
    if (len > crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX)
        return -1;
    randombytes_buf(box, CRYPTO_SEAL_NONCE_BYTES);
    return crypto_aead_xchacha20poly1305_ietf_encrypt(box + CRYPTO_SEAL_NONCE_BYTES, NULL, msg,
                                                      len, ad, adlen, NULL, box, key) == 0
               ? 0
               : -1;
}

int crypto_open(unsigned char *msg, size_t *msglen, const unsigned char key[CRYPTO_KEY_BYTES],
                const unsigned char *box, size_t boxlen, const void *ad, size_t adlen)
{
    unsigned long long n;
    if (boxlen < CRYPTO_SEAL_OVERHEAD)
        return -1;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(msg, &n, NULL, box + CRYPTO_SEAL_NONCE_BYTES,
                                                   boxlen - CRYPTO_SEAL_NONCE_BYTES, ad, adlen,
                                                   box, key) != 0)
        return -1; /* libsodium has zeroed msg */
    *msglen = (size_t)n;
    return 0;
}

static int sodium_variant(enum crypto_base64 variant)
{
    switch (variant) {
    case CRYPTO_BASE64:
        return sodium_base64_VARIANT_ORIGINAL;
    case CRYPTO_BASE64URL:
        return sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    default:
        abort();
    }
}

size_t crypto_base64_encoded_len(size_t len, enum crypto_base64 variant)
{
    if (len / 3 >= SIZE_MAX / 4 - 1)
        return SIZE_MAX;
    return sodium_base64_encoded_len(len, sodium_variant(variant)) - 1; /* NUL */
}

size_t crypto_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + (len % 4) * 3 / 4;
}

int crypto_base64_encode(char *out, size_t cap, const void *bin, size_t len,
                         enum crypto_base64 variant)
{
    size_t need = crypto_base64_encoded_len(len, variant);
    if (need == SIZE_MAX || cap <= need)
        return -1; /* sodium_bin2base64 would abort */
    sodium_bin2base64(out, cap, bin, len, sodium_variant(variant));
    return 0;
}

int crypto_base64_decode(unsigned char *out, size_t cap, size_t *outlen, const char *b64,
                         size_t len, enum crypto_base64 variant)
{
    const char *end;
    size_t n;
    /* libsodium 1.0.18 reads the input as plain (signed) char, and its
     * constant-time character tests then map every byte >= 0x80 to some
     * 6-bit value: refuse those first, without branching per byte. */
    unsigned char high = 0;
    for (size_t i = 0; i < len; i++)
        high |= (unsigned char)b64[i];
    if (high & 0x80)
        return -1;
    /* No ignore set, so any other character outside the variant's alphabet
     * stops the decoder; end then falls short of the input and we refuse it. */
    if (sodium_base642bin(out, cap, b64, len, NULL, &n, &end, sodium_variant(variant)) != 0 ||
        end != b64 + len)
        return -1;
    *outlen = n;
    return 0;
}

int crypto_ed25519_verify(const unsigned char sig[CRYPTO_ED25519_SIG_BYTES], const void *msg,
                          size_t len, const unsigned char pk[CRYPTO_ED25519_PUBLIC_BYTES])
{
    _Static_assert(crypto_sign_ed25519_BYTES == CRYPTO_ED25519_SIG_BYTES, "signature size");
    _Static_assert(crypto_sign_ed25519_PUBLICKEYBYTES == CRYPTO_ED25519_PUBLIC_BYTES, "key size");
    return crypto_sign_ed25519_verify_detached(sig, msg, len, pk) == 0;
}
