/* test_crypto.c — HMAC, base64, constant-time compare, key derivation,
 * blind indexes and sealed boxes, against published vectors where they exist. */
#include "crypto.h"
#include "tap.h"

#include <stdint.h>
#include <string.h>

/* 1 when the n bytes at b are the lower-case hex string hex. */
static int hex_is(const unsigned char *b, size_t n, const char *hex)
{
    static const char digits[] = "0123456789abcdef";
    if (strlen(hex) != 2 * n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (hex[2 * i] != digits[b[i] >> 4] || hex[2 * i + 1] != digits[b[i] & 15])
            return 0;
    return 1;
}

static void init(void)
{
    CHECK(crypto_init() == 0);
}

static void hmac_rfc4231(void)
{
    unsigned char k1[20], k6[131];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    const struct {
        const unsigned char *key;
        size_t keylen;
        const char *data;
        const char *mac;
    } cases[] = {
        {k1, sizeof k1, "Hi There", /* RFC 4231 test case 1 */
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {(const unsigned char *)"Jefe", 4, "what do ya want for nothing?", /* case 2 */
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {k6, sizeof k6, "Test Using Larger Than Block-Size Key - Hash Key First", /* case 6 */
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char mac[CRYPTO_HMAC_BYTES];
        crypto_hmac_sha256(mac, cases[i].key, cases[i].keylen, cases[i].data,
                           strlen(cases[i].data));
        if (!hex_is(mac, sizeof mac, cases[i].mac))
            printf("# HMAC case %zu\n", i);
        CHECK(hex_is(mac, sizeof mac, cases[i].mac));
    }
}

/* RFC 4648 §10; the URL-safe form is the same without padding. */
static const struct {
    const char *bin, *std, *url;
} b64_vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

/* 1 when bin encodes to exactly want and want decodes back to bin. */
static int b64_round_trip(const char *bin, size_t len, const char *want, enum crypto_base64 v)
{
    char enc[64];
    unsigned char dec[64];
    size_t n = 99;
    if (crypto_base64_encoded_len(len, v) != strlen(want) ||
        crypto_base64_encode(enc, sizeof enc, bin, len, v) != 0 || strcmp(enc, want) != 0)
        return 0;
    return crypto_base64_decode(dec, sizeof dec, &n, want, strlen(want), v) == 0 && n == len &&
           memcmp(dec, bin, len) == 0;
}

static void base64_rfc4648(void)
{
    for (size_t i = 0; i < sizeof b64_vectors / sizeof b64_vectors[0]; i++) {
        const char *bin = b64_vectors[i].bin;
        CHECK(b64_round_trip(bin, strlen(bin), b64_vectors[i].std, CRYPTO_BASE64));
        CHECK(b64_round_trip(bin, strlen(bin), b64_vectors[i].url, CRYPTO_BASE64URL));
    }
    /* 0xfb 0xff uses the two characters the alphabets disagree on */
    CHECK(b64_round_trip("\xfb\xff", 2, "+/8=", CRYPTO_BASE64));
    CHECK(b64_round_trip("\xfb\xff", 2, "-_8", CRYPTO_BASE64URL));
}

static void base64_rejects(void)
{
    static const struct {
        const char *s;
        size_t len; /* 0: strlen(s) */
        enum crypto_base64 v;
    } bad[] = {
        {"Zg", 0, CRYPTO_BASE64},         /* padding missing */
        {"Zg=", 0, CRYPTO_BASE64},        /* padding short */
        {"Zg===", 0, CRYPTO_BASE64},      /* padding long */
        {"Zm9v=", 0, CRYPTO_BASE64},      /* trailing '=' */
        {"Zm9vYmFy\n", 0, CRYPTO_BASE64}, /* trailing newline */
        {"Zm9v!", 0, CRYPTO_BASE64},      /* trailing garbage */
        {"Zm 9v", 0, CRYPTO_BASE64},      /* space inside */
        {"Zm-v", 0, CRYPTO_BASE64},       /* URL-safe character */
        {"Zh==", 0, CRYPTO_BASE64},       /* non-zero unused bits */
        {"Z", 0, CRYPTO_BASE64},          /* a lone character */
        {"Zm9v\0", 5, CRYPTO_BASE64},     /* embedded NUL */
        {"Zg==", 0, CRYPTO_BASE64URL},    /* padding */
        {"Zm8=", 0, CRYPTO_BASE64URL},    /* padding */
        {"Zm+v", 0, CRYPTO_BASE64URL},    /* '+' */
        {"Zm/v", 0, CRYPTO_BASE64URL},    /* '/' */
        {"+/8", 0, CRYPTO_BASE64URL},     /* the standard form of "-_8" */
        {"Zm9v.", 0, CRYPTO_BASE64URL},   /* trailing garbage */
        {"Zm9v ", 0, CRYPTO_BASE64URL},   /* trailing space */
        {"Zh", 0, CRYPTO_BASE64URL},      /* non-zero unused bits */
        {"Zm9vY", 0, CRYPTO_BASE64URL},   /* 4n+1 characters */
        {"Zm\0v", 4, CRYPTO_BASE64URL},   /* embedded NUL */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char out[16];
        size_t n = 99, len = bad[i].len ? bad[i].len : strlen(bad[i].s);
        int rc = crypto_base64_decode(out, sizeof out, &n, bad[i].s, len, bad[i].v);
        if (rc != -1)
            printf("# accepted case %zu: \"%s\"\n", i, bad[i].s);
        CHECK(rc == -1);
        CHECK(n == 99); /* untouched */
    }
}

/* libsodium 1.0.18 alone accepts all of these (it reads char as signed). */
static void base64_rejects_high_bytes(void)
{
    for (int v = 0; v < 2; v++)
        for (int c = 0x80; c <= 0xff; c++)
            for (size_t at = 0; at < 4; at++) {
                char s[5] = "Zm9v";
                unsigned char out[8];
                size_t n;
                s[at] = (char)c;
                if (crypto_base64_decode(out, sizeof out, &n, s, 4,
                                         v ? CRYPTO_BASE64URL : CRYPTO_BASE64) != -1) {
                    printf("# byte 0x%02x at %zu accepted (variant %d)\n", c, at, v);
                    tap_case_failed = 1;
                }
            }
}

static void base64_capacity(void)
{
    char enc[9];
    unsigned char dec[6];
    size_t n;
    CHECK(crypto_base64_encode(enc, 8, "foobar", 6, CRYPTO_BASE64) == -1); /* no room for NUL */
    CHECK(crypto_base64_encode(enc, 9, "foobar", 6, CRYPTO_BASE64) == 0);
    CHECK(strcmp(enc, "Zm9vYmFy") == 0);
    CHECK(crypto_base64_decode(dec, 5, &n, "Zm9vYmFy", 8, CRYPTO_BASE64) == -1);
    CHECK(crypto_base64_decode(dec, 6, &n, "Zm9vYmFy", 8, CRYPTO_BASE64) == 0 && n == 6);
    for (size_t len = 0; len < 64; len++) { /* decoded_max bounds every encoding */
        CHECK(crypto_base64_decoded_max(crypto_base64_encoded_len(len, CRYPTO_BASE64)) >= len);
        CHECK(crypto_base64_decoded_max(crypto_base64_encoded_len(len, CRYPTO_BASE64URL)) >=
              len);
    }
    CHECK(crypto_base64_encoded_len(SIZE_MAX, CRYPTO_BASE64) == SIZE_MAX);
}

static void equal(void)
{
    CHECK(crypto_equal("secret", 6, "secret", 6) == 1);
    CHECK(crypto_equal("", 0, "", 0) == 1);
    CHECK(crypto_equal("secret", 6, "secreT", 6) == 0);
    CHECK(crypto_equal("Secret", 6, "secret", 6) == 0);
    CHECK(crypto_equal("secret", 6, "secret!", 7) == 0);
    CHECK(crypto_equal("secret", 6, "secret", 5) == 0);
    CHECK(crypto_equal("", 0, "x", 1) == 0);
}

static void derive_key(void)
{
    unsigned char master[CRYPTO_KEY_BYTES], other[CRYPTO_KEY_BYTES];
    unsigned char a[CRYPTO_KEY_BYTES], b[CRYPTO_KEY_BYTES], c[CRYPTO_KEY_BYTES],
        d[CRYPTO_KEY_BYTES], e[CRYPTO_KEY_BYTES];
    for (int i = 0; i < CRYPTO_KEY_BYTES; i++) {
        master[i] = (unsigned char)i;
        other[i] = (unsigned char)(i + 1);
    }
    crypto_derive_key(a, master, 1, "steeple!");
    crypto_derive_key(b, master, 1, "steeple!");
    crypto_derive_key(c, master, 2, "steeple!");
    crypto_derive_key(d, master, 1, "sessions");
    crypto_derive_key(e, other, 1, "steeple!");
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    CHECK(memcmp(a, d, sizeof a) != 0);
    CHECK(memcmp(a, e, sizeof a) != 0);
    /* BLAKE2b-256 keyed with master, salt = id (LE), personal = context
     * (Python's hashlib.blake2b gives the same) */
    CHECK(hex_is(a, sizeof a, "38eacfd7c807740e3a93c996047f2e4ca7510ffbd0db7234e840242892bfa442"));
    CHECK(hex_is(c, sizeof c, "8be7238a96a962a3f5548fb8268878c22d28214ee8cc4275cd60a039fded6ee9"));
    CHECK(hex_is(d, sizeof d, "70128410c5e3ecfd8ef1501b8e45073c3f82bba445ce967a515b9de9cb8d2274"));
}

static void blind_index(void)
{
    unsigned char key[CRYPTO_KEY_BYTES], key2[CRYPTO_KEY_BYTES];
    unsigned char a[CRYPTO_KEY_BYTES], b[CRYPTO_KEY_BYTES], c[CRYPTO_KEY_BYTES],
        d[CRYPTO_KEY_BYTES];
    memset(key, 0x42, sizeof key);
    memset(key2, 0x43, sizeof key2);
    crypto_blind_index(a, key, "alice@example.com", 17);
    crypto_blind_index(b, key, "alice@example.com", 17);
    crypto_blind_index(c, key2, "alice@example.com", 17);
    crypto_blind_index(d, key, "alice@example.org", 17);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    CHECK(memcmp(a, d, sizeof a) != 0);
    /* hashlib.blake2b(data, key=key, digest_size=32) */
    CHECK(hex_is(a, sizeof a, "de459c126491bebcc167e0cf4229862b473c63ebe2153949f42b0b140ff5dc88"));
}

static const unsigned char seal_key[CRYPTO_KEY_BYTES] = "0123456789abcdef0123456789abcde";
static const char message[] = "attack at dawn";
#define MSG_LEN (sizeof message - 1)
#define BOX_LEN (MSG_LEN + CRYPTO_SEAL_OVERHEAD)

static void seal_round_trip(void)
{
    unsigned char box[BOX_LEN], out[MSG_LEN + 1];
    size_t n = 0;
    CHECK(CRYPTO_SEAL_OVERHEAD == 40);
    CHECK(crypto_seal(box, seal_key, message, MSG_LEN, NULL, 0) == 0);
    CHECK(memmem(box, sizeof box, "attack", 6) == NULL);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, NULL, 0) == 0);
    CHECK(n == MSG_LEN && memcmp(out, message, MSG_LEN) == 0);
    CHECK(crypto_seal(box, seal_key, message, MSG_LEN, "user:7", 6) == 0);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, "user:7", 6) == 0);
    CHECK(n == MSG_LEN && memcmp(out, message, MSG_LEN) == 0);
    unsigned char empty[CRYPTO_SEAL_OVERHEAD];
    CHECK(crypto_seal(empty, seal_key, "", 0, NULL, 0) == 0);
    n = 99;
    CHECK(crypto_open(out, &n, seal_key, empty, sizeof empty, NULL, 0) == 0 && n == 0);
}

static void seal_detects_any_flipped_byte(void)
{
    unsigned char box[BOX_LEN], out[MSG_LEN];
    size_t n;
    CHECK(crypto_seal(box, seal_key, message, MSG_LEN, "ad", 2) == 0);
    for (size_t i = 0; i < sizeof box; i++) { /* nonce, ciphertext and tag alike */
        box[i] ^= 0x01;
        if (crypto_open(out, &n, seal_key, box, sizeof box, "ad", 2) != -1) {
            printf("# flipped byte %zu accepted\n", i);
            tap_case_failed = 1;
        }
        box[i] ^= 0x01;
    }
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, "ad", 2) == 0);
}

static void open_refuses_wrong_key_ad_or_length(void)
{
    unsigned char box[BOX_LEN], out[MSG_LEN], key2[CRYPTO_KEY_BYTES];
    size_t n;
    memcpy(key2, seal_key, sizeof key2);
    key2[31] ^= 0x80;
    CHECK(crypto_seal(box, seal_key, message, MSG_LEN, "ad", 2) == 0);
    CHECK(crypto_open(out, &n, key2, box, sizeof box, "ad", 2) == -1);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, "aD", 2) == -1);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, NULL, 0) == -1);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, "ad!", 3) == -1);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box - 1, "ad", 2) == -1); /* truncated */
    for (size_t len = 0; len < CRYPTO_SEAL_OVERHEAD; len++)
        CHECK(crypto_open(out, &n, seal_key, box, len, "ad", 2) == -1);
    CHECK(crypto_open(out, &n, seal_key, box, sizeof box, "ad", 2) == 0);
}

static void seals_differ(void)
{
    unsigned char a[BOX_LEN], b[BOX_LEN];
    CHECK(crypto_seal(a, seal_key, message, MSG_LEN, NULL, 0) == 0);
    CHECK(crypto_seal(b, seal_key, message, MSG_LEN, NULL, 0) == 0);
    CHECK(memcmp(a, b, CRYPTO_SEAL_NONCE_BYTES) != 0);
    CHECK(memcmp(a + CRYPTO_SEAL_NONCE_BYTES, b + CRYPTO_SEAL_NONCE_BYTES,
                 BOX_LEN - CRYPTO_SEAL_NONCE_BYTES) != 0);
}

static const struct tap_case cases[] = {
    {"libsodium initialises", init},
    {"HMAC-SHA256 matches RFC 4231 cases 1, 2 and 6", hmac_rfc4231},
    {"base64 and base64url match RFC 4648 §10", base64_rfc4648},
    {"base64 decoding rejects non-canonical input", base64_rejects},
    {"base64 decoding rejects bytes >= 0x80", base64_rejects_high_bytes},
    {"base64 respects buffer capacity", base64_capacity},
    {"equal compares contents and lengths", equal},
    {"derive_key is deterministic and separates ids, contexts, masters", derive_key},
    {"blind_index is deterministic and separates keys and data", blind_index},
    {"seal/open round trip, with and without AD", seal_round_trip},
    {"open rejects a box with any byte flipped", seal_detects_any_flipped_byte},
    {"open rejects a wrong key, wrong AD and short boxes", open_refuses_wrong_key_ad_or_length},
    {"two seals of one plaintext differ", seals_differ},
};

TAP_MAIN(cases)
