/* jwt.c — HS256 JSON Web Tokens (see jwt.h). */
#include "jwt.h"

#include "crypto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The one header we sign and accept, byte for byte. */
static const char header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
#define HEADER_LEN (sizeof header_json - 1)

/* Room for the decoded parts of any token up to JWT_MAX_TOKEN, laid end to
 * end: n base64 characters never decode to more than 3n/4 bytes. */
#define DECODED_MAX (JWT_MAX_TOKEN / 4 * 3)

struct span {
    const char *p;
    size_t n;
};

struct bin {
    const unsigned char *p;
    size_t n;
};

size_t jwt_signed_len(size_t len)
{
    if (len > JWT_MAX_TOKEN)
        return SIZE_MAX;
    return crypto_base64_encoded_len(HEADER_LEN, CRYPTO_BASE64URL) + 1 +
           crypto_base64_encoded_len(len, CRYPTO_BASE64URL) + 1 +
           crypto_base64_encoded_len(CRYPTO_HMAC_BYTES, CRYPTO_BASE64URL);
}

/* Writes base64url(data) at out + *pos, then sep, and moves *pos past both
 * (a '\0' sep is written but not counted). Returns 0, or -1 if out is full. */
static int put_part(char *out, size_t cap, size_t *pos, const void *data, size_t len, char sep)
{
    if (*pos >= cap ||
        crypto_base64_encode(out + *pos, cap - *pos, data, len, CRYPTO_BASE64URL) != 0)
        return -1;
    *pos += crypto_base64_encoded_len(len, CRYPTO_BASE64URL);
    out[*pos] = sep; /* overwrites the encoder's NUL */
    if (sep != '\0')
        *pos += 1;
    return 0;
}

int jwt_sign(const unsigned char *key, size_t keylen, const char *payload, size_t len,
             char *out, size_t cap, size_t *outlen)
{
    size_t need = jwt_signed_len(len), pos = 0;
    unsigned char mac[CRYPTO_HMAC_BYTES];
    if (len == 0 || need > JWT_MAX_TOKEN || cap <= need) /* jwt_verify refuses an empty part */
        return -1;
    if (put_part(out, cap, &pos, header_json, HEADER_LEN, '.') != 0 ||
        put_part(out, cap, &pos, payload, len, '.') != 0)
        return -1;
    crypto_hmac_sha256(mac, key, keylen, out, pos - 1); /* header.payload */
    if (put_part(out, cap, &pos, mac, sizeof mac, '\0') != 0)
        return -1;
    *outlen = pos;
    return 0;
}

/* Splits t[0 .. len) at its dots into exactly three non-empty parts.
 * Returns 0, or -1 for any other shape. */
static int split(const char *t, size_t len, struct span part[3])
{
    size_t start = 0;
    for (int i = 0; i < 2; i++) {
        const char *dot = memchr(t + start, '.', len - start);
        if (dot == NULL)
            return -1;
        size_t at = (size_t)(dot - t);
        part[i] = (struct span){t + start, at - start};
        start = at + 1;
    }
    part[2] = (struct span){t + start, len - start};
    if (memchr(part[2].p, '.', part[2].n) != NULL)
        return -1;
    for (int i = 0; i < 3; i++)
        if (part[i].n == 0)
            return -1;
    return 0;
}

/* Decodes the three parts one after another into buf (DECODED_MAX bytes;
 * enough when the parts come from a token within JWT_MAX_TOKEN). Returns 0,
 * or -1 when a part is not canonical base64url. */
static int decode_parts(const struct span text[3], unsigned char *buf, struct bin out[3])
{
    size_t used = 0;
    for (int i = 0; i < 3; i++) {
        size_t n;
        if (crypto_base64_decode(buf + used, DECODED_MAX - used, &n, text[i].p, text[i].n,
                                 CRYPTO_BASE64URL) != 0)
            return -1;
        out[i] = (struct bin){buf + used, n};
        used += n;
    }
    return 0;
}

enum jwt_result jwt_verify(const unsigned char *key, size_t keylen, const char *token,
                           size_t len, char *payload, size_t cap, size_t *payload_len)
{
    struct span text[3];
    struct bin bin[3];
    unsigned char buf[DECODED_MAX], mac[CRYPTO_HMAC_BYTES];
    *payload_len = 0;
    if (len == 0 || len > JWT_MAX_TOKEN || split(token, len, text) != 0 ||
        decode_parts(text, buf, bin) != 0 || bin[1].n > cap)
        return JWT_MALFORMED;
    if (bin[0].n != HEADER_LEN || memcmp(bin[0].p, header_json, HEADER_LEN) != 0)
        return JWT_ALGORITHM;
    /* header.payload, as sent: text[2] starts just past the second dot */
    crypto_hmac_sha256(mac, key, keylen, token, (size_t)(text[2].p - token) - 1);
    int good = crypto_equal(mac, sizeof mac, bin[2].p, bin[2].n);
    crypto_wipe(mac, sizeof mac); /* a valid MAC for whatever was sent */
    if (!good)
        return JWT_SIGNATURE;
    memcpy(payload, bin[1].p, bin[1].n); /* n >= 1: a part is never empty */
    if (bin[1].n < cap)
        payload[bin[1].n] = '\0';
    *payload_len = bin[1].n;
    return JWT_OK;
}

const char *jwt_result_name(enum jwt_result r)
{
    switch (r) {
    case JWT_OK:
        return "ok";
    case JWT_MALFORMED:
        return "malformed";
    case JWT_ALGORITHM:
        return "algorithm";
    case JWT_SIGNATURE:
        return "signature";
    default:
        abort();
    }
}
