/* jwt.h — HS256 JSON Web Tokens (RFC 7519), free of Lua.
 *
 * We sign and accept exactly one header, {"alg":"HS256","typ":"JWT"}: any
 * other (alg "none", another algorithm, extra fields, other spacing) is
 * refused before the signature is looked at. Claims such as exp are the
 * caller's business; this layer only authenticates the payload bytes. */
#ifndef STEEPLE_JWT_H
#define STEEPLE_JWT_H

#include <stddef.h>

/* Longest token jwt_verify accepts and jwt_sign produces, NUL excluded. */
#define JWT_MAX_TOKEN 4096

enum jwt_result {
    JWT_OK,
    JWT_MALFORMED, /* not header.payload.signature in base64url, too long, or
                      a payload bigger than the caller's buffer */
    JWT_ALGORITHM, /* a header other than ours */
    JWT_SIGNATURE, /* the signature is not HMAC-SHA256(key, header.payload) */
};

/* The length of the token jwt_sign makes for a len-byte payload, NUL
 * excluded; SIZE_MAX when len alone exceeds JWT_MAX_TOKEN. */
size_t jwt_signed_len(size_t len);

/* Writes base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256(
 * key, the first two parts)) plus a NUL into out, unpadded, and its length
 * (NUL excluded) into *outlen. The key may be any length; callers should use
 * at least 32 random bytes. Returns 0, or -1 (out unspecified) when the
 * payload is empty (its token would not verify), the token would exceed
 * JWT_MAX_TOKEN or cap < jwt_signed_len(len) + 1. */
int jwt_sign(const unsigned char *key, size_t keylen, const char *payload, size_t len,
             char *out, size_t cap, size_t *outlen) __attribute__((warn_unused_result));

/* Checks the len bytes at token (no NUL needed; never read past len) against
 * key. On JWT_OK the decoded payload is in payload[0 .. *payload_len),
 * NUL-terminated when cap leaves room. On any other result payload is
 * untouched and *payload_len is 0. Checks run in order: form (JWT_MALFORMED),
 * then header (JWT_ALGORITHM), then signature (JWT_SIGNATURE), the last in
 * constant time. A decoded payload longer than cap is JWT_MALFORMED. */
enum jwt_result jwt_verify(const unsigned char *key, size_t keylen, const char *token,
                           size_t len, char *payload, size_t cap, size_t *payload_len)
    __attribute__((warn_unused_result));

/* "ok", "malformed", "algorithm" or "signature": a static string. */
const char *jwt_result_name(enum jwt_result r);

#endif
