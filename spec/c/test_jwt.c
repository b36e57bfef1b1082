/* test_jwt.c — HS256 tokens: a known answer, tampering, foreign headers,
 * malformed shapes, size limits, and truncated or extended tokens. */
#include "jwt.h"
#include "crypto.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static const unsigned char key[] = "0123456789abcdef0123456789abcdef";
#define KEY_LEN (sizeof key - 1)
static const char payload[] = "{\"sub\":\"alice\",\"exp\":1700000000}";
#define PAYLOAD_LEN (sizeof payload - 1)

/* Made independently with Python's hmac and base64 modules. */
static const char known_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
    "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98";

/* Verifies the len bytes of a fresh heap copy of token (so ASan sees any
 * read past len), with a roomy payload buffer. */
static enum jwt_result verify_n(const unsigned char *k, size_t klen, const char *token, size_t len)
{
    char *copy = malloc(len ? len : 1);
    char out[JWT_MAX_TOKEN];
    size_t n;
    memcpy(copy, token, len);
    enum jwt_result r = jwt_verify(k, klen, copy, len, out, sizeof out, &n);
    free(copy);
    return r;
}

static enum jwt_result verify(const char *token)
{
    return verify_n(key, KEY_LEN, token, strlen(token));
}

/* Assembles b64url(header).b64url(body).b64url(HMAC-SHA256(k, first two))
 * into out by hand, without jwt_sign. Returns the token length. */
static size_t forge(char *out, size_t cap, const char *header, const char *body,
                    size_t body_len, const unsigned char *k, size_t klen)
{
    size_t pos = 0;
    unsigned char mac[CRYPTO_HMAC_BYTES];
    if (crypto_base64_encode(out, cap, header, strlen(header), CRYPTO_BASE64URL) != 0)
        abort();
    pos = strlen(out);
    out[pos++] = '.';
    if (crypto_base64_encode(out + pos, cap - pos, body, body_len, CRYPTO_BASE64URL) != 0)
        abort();
    pos += strlen(out + pos);
    crypto_hmac_sha256(mac, k, klen, out, pos);
    out[pos++] = '.';
    if (crypto_base64_encode(out + pos, cap - pos, mac, sizeof mac, CRYPTO_BASE64URL) != 0)
        abort();
    return pos + strlen(out + pos);
}

static void init(void)
{
    CHECK(crypto_init() == 0);
}

static void known_answer_and_round_trip(void)
{
    char token[JWT_MAX_TOKEN + 1], out[64];
    size_t n = 0, m = 0;
    CHECK(jwt_sign(key, KEY_LEN, payload, PAYLOAD_LEN, token, sizeof token, &n) == 0);
    CHECK(n == sizeof known_token - 1 && strcmp(token, known_token) == 0);
    CHECK(n == jwt_signed_len(PAYLOAD_LEN));
    memset(out, 'x', sizeof out);
    CHECK(jwt_verify(key, KEY_LEN, token, n, out, sizeof out, &m) == JWT_OK);
    CHECK(m == PAYLOAD_LEN && memcmp(out, payload, m) == 0 && out[m] == '\0');
}

static void tampering_breaks_the_signature(void)
{
    char t[sizeof known_token];
    /* payload part: '{"sub":"alice"…' becomes '{"sub":"blice"…' */
    char body[] = "{\"sub\":\"blice\",\"exp\":1700000000}";
    char forged[256];
    size_t flen = forge(forged, sizeof forged, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", body,
                        strlen(body), key, KEY_LEN);
    char *sig_at = strrchr(forged, '.');
    memcpy(t, forged, (size_t)(sig_at - forged));
    strcpy(t + (sig_at - forged), strrchr(known_token, '.')); /* the old signature */
    CHECK(verify(t) == JWT_SIGNATURE);
    CHECK(verify_n(key, KEY_LEN, forged, flen) == JWT_OK); /* re-signed with the key: fine */
    memcpy(t, known_token, sizeof t);
    t[strlen(t) - 43] ^= 'A' ^ 'B'; /* '1' of the signature becomes another digit */
    CHECK(verify(t) == JWT_SIGNATURE);
    memcpy(t, known_token, sizeof t);
    t[40] = t[40] == 'A' ? 'B' : 'A'; /* a payload character */
    CHECK(verify(t) == JWT_SIGNATURE);
}

static void wrong_key_breaks_the_signature(void)
{
    unsigned char other[KEY_LEN];
    memcpy(other, key, KEY_LEN);
    other[0] ^= 1;
    CHECK(verify_n(other, KEY_LEN, known_token, strlen(known_token)) == JWT_SIGNATURE);
    CHECK(verify_n(key, KEY_LEN - 1, known_token, strlen(known_token)) == JWT_SIGNATURE);
    CHECK(verify_n(key, KEY_LEN, known_token, strlen(known_token)) == JWT_OK);
}

static void foreign_headers_are_refused(void)
{
    static const char *headers[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
        "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"hs256\",\"typ\":\"JWT\"}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":\"HS256\"}",
        "{\"typ\":\"JWT\",\"alg\":\"HS256\"}",          /* same meaning, other bytes */
        "{\"alg\": \"HS256\",\"typ\":\"JWT\"}",         /* a space */
        "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":1}", /* an extra field */
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"} ",         /* trailing space */
        "x",
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char t[256];
        size_t n = forge(t, sizeof t, headers[i], payload, PAYLOAD_LEN, key, KEY_LEN);
        enum jwt_result r = verify_n(key, KEY_LEN, t, n); /* correctly HMAC'd */
        if (r != JWT_ALGORITHM)
            printf("# header %zu: %s\n", i, jwt_result_name(r));
        CHECK(r == JWT_ALGORITHM);
    }
}

static void alg_none(void)
{
    char t[256];
    size_t n = forge(t, sizeof t, "{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, PAYLOAD_LEN,
                     key, KEY_LEN);
    char *dot = strrchr(t, '.');
    CHECK(verify_n(key, KEY_LEN, t, n) == JWT_ALGORITHM);    /* with an HS256 signature */
    strcpy(dot + 1, "c2ln");
    CHECK(verify(t) == JWT_ALGORITHM);                       /* with any signature */
    dot[1] = '\0';
    CHECK(verify(t) == JWT_MALFORMED);                       /* empty signature: "x.y." */
    CHECK(strncmp(t, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.", 36) == 0);
}

static void malformed_shapes(void)
{
    static const char *bad[] = {
        "",
        "abc",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.",
        ".eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
        "..",
        "...",
        "a.b.c", /* one-character parts are never base64 */
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98.",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98.eyJ9",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9=.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98=",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy/PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIs+mV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
        " eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98\n",
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "1H8Yc4DA9BFqzy_PqzUSNLqyCgx8eL7rRCMh8Wi0c98",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum jwt_result r = verify(bad[i]);
        if (r != JWT_MALFORMED)
            printf("# case %zu: %s\n", i, jwt_result_name(r));
        CHECK(r == JWT_MALFORMED);
    }
    char t[sizeof known_token]; /* an embedded NUL, counted in len */
    memcpy(t, known_token, sizeof t);
    t[20] = '\0';
    CHECK(verify_n(key, KEY_LEN, t, sizeof t - 1) == JWT_MALFORMED);
    memcpy(t, known_token, sizeof t); /* '_' with its high bit set */
    t[95] = (char)('_' | 0x80);
    CHECK(verify_n(key, KEY_LEN, t, sizeof t - 1) == JWT_MALFORMED);
}

static void size_limits(void)
{
    static char body[4096], t[6000], out[JWT_MAX_TOKEN + 1];
    size_t n;
    memset(body, 'a', sizeof body);
    /* 36 + 1 + 4919 + 1 + 43 = 5000 bytes, correctly signed */
    size_t len = forge(t, sizeof t, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", body, 3689, key, KEY_LEN);
    CHECK(len == 5000);
    CHECK(verify_n(key, KEY_LEN, t, len) == JWT_MALFORMED);
    CHECK(jwt_sign(key, KEY_LEN, body, 3689, out, sizeof out, &n) == -1);
    /* 3011 bytes of payload make a token of exactly JWT_MAX_TOKEN */
    CHECK(jwt_signed_len(3011) == JWT_MAX_TOKEN && jwt_signed_len(3012) == JWT_MAX_TOKEN + 1);
    CHECK(jwt_sign(key, KEY_LEN, body, 3011, out, sizeof out, &n) == 0 && n == JWT_MAX_TOKEN);
    CHECK(verify_n(key, KEY_LEN, out, n) == JWT_OK);
    CHECK(jwt_sign(key, KEY_LEN, body, 3012, out, sizeof out, &n) == -1);
    CHECK(jwt_sign(key, KEY_LEN, body, 0, out, sizeof out, &n) == -1); /* empty: would not verify */
    len = forge(t, sizeof t, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", body, 3012, key, KEY_LEN);
    CHECK(len == JWT_MAX_TOKEN + 1 && verify_n(key, KEY_LEN, t, len) == JWT_MALFORMED);
    CHECK(jwt_signed_len(JWT_MAX_TOKEN + 1) == SIZE_MAX);
    CHECK(jwt_signed_len(SIZE_MAX) == SIZE_MAX);
}

static void sign_needs_room(void)
{
    char out[sizeof known_token];
    size_t n = 0;
    CHECK(jwt_sign(key, KEY_LEN, payload, PAYLOAD_LEN, out, sizeof out - 1, &n) == -1);
    CHECK(jwt_sign(key, KEY_LEN, payload, PAYLOAD_LEN, out, 10, &n) == -1);
    CHECK(jwt_sign(key, KEY_LEN, payload, PAYLOAD_LEN, out, sizeof out, &n) == 0);
    CHECK(n == sizeof out - 1 && strcmp(out, known_token) == 0);
}

static void payload_buffer(void)
{
    char out[PAYLOAD_LEN + 2];
    size_t n = 99, len = strlen(known_token);
    memset(out, '#', sizeof out);
    CHECK(jwt_verify(key, KEY_LEN, known_token, len, out, PAYLOAD_LEN - 1, &n) ==
          JWT_MALFORMED);
    CHECK(n == 0 && out[0] == '#'); /* untouched on failure */
    CHECK(jwt_verify(key, KEY_LEN, known_token, len, out, PAYLOAD_LEN, &n) == JWT_OK);
    CHECK(n == PAYLOAD_LEN && memcmp(out, payload, n) == 0 && out[n] == '#'); /* no room for NUL */
    CHECK(jwt_verify(key, KEY_LEN, known_token, len, out, PAYLOAD_LEN + 1, &n) == JWT_OK);
    CHECK(n == PAYLOAD_LEN && out[n] == '\0');
    n = 99;
    CHECK(jwt_verify(key, KEY_LEN, known_token, len - 1, out, sizeof out, &n) != JWT_OK);
    CHECK(n == 0);
}

static void prefixes_and_extensions(void)
{
    size_t len = strlen(known_token);
    char longer[sizeof known_token + 8];
    /* the token followed by more bytes: only len counts */
    memcpy(longer, known_token, len);
    memcpy(longer + len, "A.x.y", 6);
    CHECK(verify_n(key, KEY_LEN, longer, len) == JWT_OK);
    CHECK(verify_n(key, KEY_LEN, longer, len + 1) == JWT_SIGNATURE); /* 33-byte signature */
    CHECK(verify_n(key, KEY_LEN, longer, len + 2) == JWT_MALFORMED); /* four parts */
    CHECK(verify(longer) == JWT_MALFORMED);
    /* no proper prefix verifies, and none reads past its end */
    for (size_t i = 0; i < len; i++) {
        if (verify_n(key, KEY_LEN, known_token, i) == JWT_OK) {
            printf("# prefix of %zu bytes accepted\n", i);
            tap_case_failed = 1;
        }
    }
    /* nor does any single-bit change */
    char t[sizeof known_token];
    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(t, known_token, sizeof t);
            t[i] ^= (char)(1 << bit);
            if (verify_n(key, KEY_LEN, t, len) == JWT_OK) {
                printf("# byte %zu bit %d changed, accepted\n", i, bit);
                tap_case_failed = 1;
            }
        }
}

static void result_names(void)
{
    CHECK(strcmp(jwt_result_name(JWT_OK), "ok") == 0);
    CHECK(strcmp(jwt_result_name(JWT_MALFORMED), "malformed") == 0);
    CHECK(strcmp(jwt_result_name(JWT_ALGORITHM), "algorithm") == 0);
    CHECK(strcmp(jwt_result_name(JWT_SIGNATURE), "signature") == 0);
}

static const struct tap_case cases[] = {
    {"libsodium initialises", init},
    {"sign matches a known token and verify round-trips", known_answer_and_round_trip},
    {"a changed payload or signature fails as signature", tampering_breaks_the_signature},
    {"a different key fails as signature", wrong_key_breaks_the_signature},
    {"any header but ours, correctly HMAC'd, fails as algorithm", foreign_headers_are_refused},
    {"alg none: algorithm with a signature, malformed without", alg_none},
    {"wrong shapes and characters are malformed", malformed_shapes},
    {"tokens over JWT_MAX_TOKEN are neither signed nor accepted", size_limits},
    {"sign refuses a small buffer", sign_needs_room},
    {"verify respects the payload buffer", payload_buffer},
    {"prefixes, extensions and bit flips never verify", prefixes_and_extensions},
    {"result names", result_names},
};

TAP_MAIN(cases)
