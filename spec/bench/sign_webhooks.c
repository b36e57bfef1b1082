/* sign_webhooks.c — pre-signed Telnyx `message.received` webhooks for
 * bench_messaging.sh, signed as Telnyx does: Ed25519 over
 * "{telnyx-timestamp}|{raw body}", with a key pair from a fixed seed.
 *
 *   sign_webhooks --public-key
 *       prints the base64 public key (for TELNYX_PUBLIC_KEY)
 *   sign_webhooks OUT N CHURCHES CONTACTS HOT_EVERY TAG [TEXT]
 *       writes N lines "timestamp<TAB>signature-base64<TAB>body" to OUT, all
 *       with the timestamp of now. Request i goes to church i % CHURCHES
 *       (number +1555 and 7 digits of the church's index + 1); of each
 *       church's requests, every HOT_EVERY-th comes from its contact 0 (one
 *       long conversation), the others go round contacts 1..CONTACTS. Each
 *       request has its own payload.id "bench-TAG-i" (a real insert) and
 *       event id "ev-TAG-i". The message's text is TEXT when given (e.g. STOP;
 *       printable ASCII without " or \), else a sentence naming i.
 *
 *   cc -O2 -o sign_webhooks sign_webhooks.c $(pkg-config --cflags --libs libsodium) */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const unsigned char SEED[crypto_sign_SEEDBYTES] = "steeple-bench-telnyx-webhook-key";

static long arg_long(const char *s, const char *name, long min)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min) {
        fprintf(stderr, "sign_webhooks: bad %s: %s\n", name, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char b64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES, sodium_base64_VARIANT_ORIGINAL)];
    if (sodium_init() < 0)
        return 1;
    crypto_sign_seed_keypair(pk, sk, SEED);
    if (argc == 2 && strcmp(argv[1], "--public-key") == 0) {
        puts(sodium_bin2base64(b64, sizeof b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL));
        return 0;
    }
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: sign_webhooks --public-key | OUT N CHURCHES CONTACTS HOT_EVERY TAG [TEXT]\n");
        return 2;
    }
    long n = arg_long(argv[2], "N", 1), churches = arg_long(argv[3], "CHURCHES", 1);
    long contacts = arg_long(argv[4], "CONTACTS", 1), hot = arg_long(argv[5], "HOT_EVERY", 2);
    const char *tag = argv[6], *text = argc == 8 ? argv[7] : NULL;
    if (churches > 999 || contacts > 99999 || strlen(tag) > 60 || (text != NULL && strlen(text) > 200)) {
        fprintf(stderr, "sign_webhooks: at most 999 churches, 99999 contacts, a tag of 60 bytes, a text of 200\n");
        return 2;
    }
    for (const char *t = text; t != NULL && *t != '\0'; t++) {
        if (*t < 0x20 || *t > 0x7e || *t == '"' || *t == '\\') {
            fprintf(stderr, "sign_webhooks: TEXT must be printable ASCII without \" or \\\n");
            return 2;
        }
    }
    char sentence[120];
    FILE *out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 1;
    }
    char ts[24], msg[1024], body[1000];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
    size_t tslen = strlen(ts);
    memcpy(msg, ts, tslen);
    msg[tslen] = '|';
    for (long i = 0; i < n; i++) {
        long church = i % churches, j = i / churches, contact;
        if (j % hot == 0)
            contact = 0;
        else
            contact = 1 + (j - (j / hot + 1)) % contacts; /* the j-th request not to contact 0 */
        if (text == NULL)
            snprintf(sentence, sizeof sentence,
                     "Bench message %010ld: see you at the service on Sunday morning, and thank you for the flowers!", i);
        int len = snprintf(body, sizeof body,
            "{\"data\":{\"id\":\"ev-%s-%ld\",\"event_type\":\"message.received\","
            "\"occurred_at\":\"2026-11-29T12:00:00Z\",\"payload\":{\"id\":\"bench-%s-%ld\","
            "\"from\":{\"phone_number\":\"+1666%03ld%05ld\"},\"to\":[{\"phone_number\":\"+1555%07ld\"}],"
            "\"text\":\"%s\",\"media\":[]}},\"meta\":{\"attempt\":1}}",
            tag, i, tag, i, church, contact, church + 1, text != NULL ? text : sentence);
        if (len < 0 || (size_t)len >= sizeof body)
            return 1;
        memcpy(msg + tslen + 1, body, (size_t)len);
        unsigned char sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, (const unsigned char *)msg, tslen + 1 + (size_t)len, sk);
        fprintf(out, "%s\t%s\t%s\n", ts,
                sodium_bin2base64(b64, sizeof b64, sig, sizeof sig, sodium_base64_VARIANT_ORIGINAL), body);
    }
    if (fclose(out) != 0) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
