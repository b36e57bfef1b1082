/* fuzz_jwt.c — HS256 tokens (core/jwt.c, with core/crypto.c's base64url).
 *
 * Feeds:
 *   1. the whole input, as a token, to jwt_verify under a fixed 32-byte key,
 *      from an exact-size heap copy (ASan sees any read past its length) and
 *      into a payload buffer whose size the input's first byte picks;
 *   2. the input after its first 3 bytes, as the claims, to jwt_sign, then the
 *      token back to jwt_verify, then a mutation of it (bytes 0-2 choose flip,
 *      insert, delete or truncate, and where) to jwt_verify again.
 * Asserts:
 *   - verify returns JWT_OK only for the exact bytes jwt_sign makes for the
 *     payload it hands back (so for no other header, encoding or MAC), and an
 *     independent libsodium HMAC of the first two parts agrees;
 *   - on any other result *payload_len is 0 and the payload buffer is
 *     untouched; on JWT_OK the payload fits the buffer and is NUL-terminated
 *     when there is room;
 *   - sign fails exactly when jwt_signed_len(len) >= cap or the token would
 *     pass JWT_MAX_TOKEN, writes jwt_signed_len(len) bytes plus a NUL, and the
 *     round trip gives back the same payload; an empty payload is refused
 *     (its token would have an empty middle part, which jwt_verify refuses);
 *   - a mutated token verifies only if it equals the original, and no token
 *     verifies under another key. */
#include "crypto.h"
#include "fuzz_util.h"
#include "jwt.h"

#include <sodium.h>

static const unsigned char key[32] = "fuzz-jwt-key-0123456789abcdefghi";
static const unsigned char other_key[33] = "fuzz-jwt-key-0123456789abcdefghij";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (crypto_init() != 0)
        abort();
    return 0;
}

/* Checks jwt_verify's contract on one token; returns its result. */
static enum jwt_result verify_checked(const unsigned char *k, size_t klen, const char *token,
                                      size_t len, size_t cap, char *payload, size_t *plen)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, token, len);
    memset(payload, 0xA5, cap + 1);
    *plen = 12345;
    enum jwt_result r = jwt_verify(k, klen, copy, len, payload, cap, plen);
    FUZZ_CHECK(r == JWT_OK || r == JWT_MALFORMED || r == JWT_ALGORITHM || r == JWT_SIGNATURE,
               "jwt_verify returned %d", (int)r);
    (void)jwt_result_name(r); /* aborts on an unnamed result */
    if (r != JWT_OK) {
        FUZZ_CHECK(*plen == 0, "failed verify left payload_len %zu", *plen);
        for (size_t i = 0; i <= cap; i++)
            FUZZ_CHECK((unsigned char)payload[i] == 0xA5, "failed verify wrote payload[%zu]", i);
        free(copy);
        return r;
    }
    FUZZ_CHECK(*plen >= 1 && *plen <= cap, "payload_len %zu with cap %zu", *plen, cap);
    FUZZ_CHECK(*plen == cap || payload[*plen] == '\0', "payload not NUL-terminated");
    FUZZ_CHECK((unsigned char)payload[cap] == 0xA5, "verify wrote past cap");

    /* the only token that may verify: what jwt_sign makes of that payload */
    char again[JWT_MAX_TOKEN + 1];
    size_t n;
    FUZZ_CHECK(jwt_sign(k, klen, payload, *plen, again, sizeof again, &n) == 0,
               "a verified payload cannot be signed again");
    FUZZ_CHECK(n == len && memcmp(again, copy, len) == 0,
               "verified a token that is not the canonical signed form of its payload");

    /* and libsodium, on its own, agrees with the MAC */
    const char *dot = memrchr(copy, '.', len);
    unsigned char mac[crypto_auth_hmacsha256_BYTES], sent[64];
    size_t sentlen;
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, k, klen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)copy, (size_t)(dot - copy));
    crypto_auth_hmacsha256_final(&st, mac);
    FUZZ_CHECK(sodium_base642bin(sent, sizeof sent, dot + 1, len - (size_t)(dot - copy) - 1, NULL,
                                 &sentlen, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
                   sentlen == sizeof mac && memcmp(sent, mac, sizeof mac) == 0,
               "verified a token whose MAC libsodium does not confirm");
    free(copy);
    return r;
}

/* Applies one mutation to t[0 .. *len) (room for JWT_MAX_TOKEN + 2). */
static void mutate(char *t, size_t *len, uint8_t how, uint16_t where)
{
    size_t at = *len ? where % *len : 0;
    switch (how & 3) {
    case 0: /* flip bits of one byte */
        t[at] = (char)(t[at] ^ (how >> 2 | 1));
        break;
    case 1: /* insert a byte */
        memmove(t + at + 1, t + at, *len - at);
        t[at] = (char)(how >> 2) + '-';
        (*len)++;
        break;
    case 2: /* delete a byte */
        if (*len) {
            memmove(t + at, t + at + 1, *len - at - 1);
            (*len)--;
        }
        break;
    default: /* truncate */
        *len = at;
        break;
    }
}

static void round_trip(const uint8_t *claims, size_t len, uint8_t how, uint16_t where)
{
    char token[JWT_MAX_TOKEN + 2], payload[JWT_MAX_TOKEN + 1];
    size_t n = 0, plen;
    size_t need = jwt_signed_len(len);
    int rc = jwt_sign(key, sizeof key, (const char *)claims, len, token, sizeof token - 1, &n);
    int should = len > 0 && need <= JWT_MAX_TOKEN;
    FUZZ_CHECK((rc == 0) == should, "jwt_sign returned %d for a %zu-byte payload (need %zu)", rc,
               len, need);
    if (rc != 0)
        return;
    FUZZ_CHECK(n == need && token[n] == '\0' && strlen(token) == n, "jwt_sign length %zu, want %zu",
               n, need);

    /* a buffer one byte short must be refused */
    char tight[JWT_MAX_TOKEN + 1];
    size_t m;
    FUZZ_CHECK(jwt_sign(key, sizeof key, (const char *)claims, len, tight, need, &m) != 0,
               "jwt_sign wrote a token into a buffer without room for its NUL");

    enum jwt_result r = verify_checked(key, sizeof key, token, n, JWT_MAX_TOKEN, payload, &plen);
    FUZZ_CHECK(r == JWT_OK, "a token jwt_sign made does not verify: %s", jwt_result_name(r));
    FUZZ_CHECK(plen == len && memcmp(payload, claims, len) == 0, "round trip changed the payload");

    r = verify_checked(other_key, sizeof other_key, token, n, JWT_MAX_TOKEN, payload, &plen);
    FUZZ_CHECK(r == JWT_SIGNATURE, "a token verified under another key: %s", jwt_result_name(r));

    char original[JWT_MAX_TOKEN + 2];
    size_t olen = n;
    memcpy(original, token, n);
    mutate(token, &n, how, where);
    r = verify_checked(key, sizeof key, token, n, JWT_MAX_TOKEN, payload, &plen);
    if (r == JWT_OK)
        FUZZ_CHECK(n == olen && memcmp(token, original, n) == 0,
                   "a mutated token verified (mutation %u at %u)", how, where);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. the input as a token */
    char payload[JWT_MAX_TOKEN + 1];
    size_t plen, cap = size ? (size_t)data[0] * 16 + 1 : 1;
    if (cap > JWT_MAX_TOKEN)
        cap = JWT_MAX_TOKEN;
    if (size <= JWT_MAX_TOKEN + 8)
        (void)verify_checked(key, sizeof key, (const char *)data, size, cap, payload, &plen);

    /* 2. the rest as claims: sign, verify, mutate */
    struct fuzz_in in = {data, size};
    uint8_t how = fuzz_u8(&in);
    uint16_t where = fuzz_u16(&in);
    round_trip(in.p, in.n, how, where);
    return 0;
}
