/* fuzz_webhook.c — Telnyx webhooks: the signature check and the event parser.
 *
 * Runs in the real script state (fuzz_app.h: lua/conf.lua, lua/app.lua and
 * every module, the steeple.* C modules preloaded by lua_host.c), configured
 * with a fixed Ed25519 public key. Feeds a request table to
 * require("messaging.webhook").verify — which decodes the signature header
 * with steeple.crypto.base64_decode (core/crypto.c crypto_base64_decode) and
 * checks it with steeple.crypto.ed25519_verify (crypto_ed25519_verify) over
 * "{timestamp}|{body}", the timestamp within telnyx.tolerance_s (300 s) of
 * steeple.now() — and the body to require("messaging.events").parse.
 *
 * Input: byte 0 mode (bit 0 signed: the harness signs "ts|body" with the
 * matching secret key, ts = now + 5 * (int8)byte 1; bit 1 no timestamp
 * header; bit 2 no signature header; bits 3-4, signed only: flip a bit of
 * the signature, the body, the timestamp, or of the base64 text, at byte 2;
 * bit 5: pad the base64 text with a trailing newline); raw mode: then a
 * length-prefixed timestamp and signature header; the rest is the body.
 * Asserts:
 *   - verify either returns or raises errors' invalid_signature, and it
 *     accepts exactly when an independent check says so: both headers, a
 *     1-12 digit timestamp within 300 s of now (not judged within 5 s of
 *     the edge), a canonical padded base64 signature of 64 bytes (checked
 *     here by hand), and libsodium's crypto_sign_verify_detached of
 *     "ts|body" — so a mutated signature, body or timestamp never passes;
 *   - parse returns an event or raises invalid_json / validation_failed,
 *     never another error; a returned event has a string type, and for
 *     message.received / message.sent / delivered / finalized: a message id
 *     of 1-200 bytes, E.164 numbers, text of valid UTF-8 up to 10000
 *     characters, at most 10 media with http(s) URLs up to 2048 bytes, and
 *     a known outbound status, and no string holding a NUL byte. */
#include "fuzz_app.h"

#include <ctype.h>
#include <math.h>
#include <sodium.h>
#include <time.h>

static struct worker w;
static lua_State *L;
static int check_ref;
static unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];

static const char harness[] =
    "local webhook = require 'messaging.webhook'\n"
    "local events = require 'messaging.events'\n"
    "local errors = require 'errors'\n"
    "local type, pcall, tostring, ipairs, pairs = type, pcall, tostring, ipairs, pairs\n"
    "local find = string.find\n"
    "local PHONE = '^%+%d%d%d%d%d%d%d%d%d?%d?%d?%d?%d?%d?%d?$'\n"
    "local STATUS = { queued = true, sending = true, sent = true, delivered = true,\n"
    "  sending_failed = true, delivery_failed = true, delivery_unconfirmed = true }\n"
    "local HANDLED = { ['message.received'] = true, ['message.sent'] = true,\n"
    "  ['message.delivered'] = true, ['message.finalized'] = true }\n"
    "local function phone(s) return type(s) == 'string' and find(s, PHONE) ~= nil end\n"
    "local function bad_event(ev)\n"
    "  if type(ev) ~= 'table' or type(ev.type) ~= 'string' then return 'no type' end\n"
    "  if ev.event_id ~= nil and (type(ev.event_id) ~= 'string' or #ev.event_id > 200) then\n"
    "    return 'event_id' end\n"
    "  if not HANDLED[ev.type] then return nil end\n"
    "  if type(ev.message_id) ~= 'string' or #ev.message_id < 1 or #ev.message_id > 200 then\n"
    "    return 'message_id' end\n"
    "  if not phone(ev.church_number) then return 'church_number' end\n"
    "  if ev.type ~= 'message.received' then\n"
    "    if not STATUS[ev.status] then return 'status' end\n"
    "    return nil\n"
    "  end\n"
    "  if not phone(ev.contact_number) then return 'contact_number' end\n"
    "  local n = type(ev.text) == 'string' and utf8.len(ev.text)\n"
    "  if not n or n > 10000 then return 'text' end\n"
    "  if type(ev.media) ~= 'table' or #ev.media > 10 then return 'media' end\n"
    "  for _, m in ipairs(ev.media) do\n"
    "    if type(m.url) ~= 'string' or #m.url > 2048 or not find(m.url, '^https?://') then\n"
    "      return 'media url' end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "local function has_nul(v)\n"
    "  if type(v) == 'string' then return find(v, '\\0', 1, true) ~= nil end\n"
    "  if type(v) ~= 'table' then return false end\n"
    "  for k, x in pairs(v) do if has_nul(k) or has_nul(x) then return true end end\n"
    "  return false\n"
    "end\n"
    "return function(ts, sig, body)\n"
    "  local req = { headers = { ['telnyx-timestamp'] = ts, ['telnyx-signature-ed25519'] = sig },\n"
    "                body = body }\n"
    "  local ok, e = pcall(webhook.verify, req)\n"
    "  local verified = ok\n"
    "  if not ok and not (errors.is(e) and e.code == 'invalid_signature') then\n"
    "    return nil, 'verify raised ' .. tostring(e)\n"
    "  end\n"
    "  local parsed, ev = pcall(events.parse, body)\n"
    "  if parsed then\n"
    "    local bad = bad_event(ev)\n"
    "    if bad then return nil, 'parse returned a bad event: ' .. bad end\n"
    "    return verified, ev.type, has_nul(ev)\n"
    "  end\n"
    "  if errors.is(ev) and (ev.code == 'invalid_json' or ev.code == 'validation_failed') then\n"
    "    return verified, ev.code\n"
    "  end\n"
    "  return nil, 'parse raised ' .. tostring(ev)\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    unsigned char seed[crypto_sign_SEEDBYTES];
    memset(seed, 0x42, sizeof seed);
    if (sodium_init() < 0 || crypto_sign_seed_keypair(pk, sk, seed) != 0)
        abort();
    char b64[64], config[256];
    sodium_bin2base64(b64, sizeof b64, pk, sizeof pk, sodium_base64_VARIANT_ORIGINAL);
    snprintf(config, sizeof config,
             "return { telnyx = { public_key = '%s' }, log = { level = 'error' } }\n", b64);
    L = fuzz_app_state(&w, config)->L;
    fuzz_app_chunk(L, harness, "=fuzz_webhook");
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Canonical padded standard base64, checked by hand, then decoded. Returns
 * the decoded length, or -1. */
static long strict_base64(const char *s, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 != 0)
        return -1;
    size_t pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad || !(isalnum(c) || c == '+' || c == '/') || c >= 0x80)
            return -1;
    }
    if (pad > 2)
        return -1;
    size_t len;
    const char *end;
    if (sodium_base642bin(out, cap, s, n, NULL, &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != s + n)
        return -1; /* libsodium also refuses non-zero unused bits */
    return (long)len;
}

struct message {
    const char *ts, *sig; /* NULL: header absent */
    size_t tslen, siglen;
    const uint8_t *body;
    size_t bodylen;
};

/* 1 accept, 0 refuse, -1 too close to the tolerance edge to say. */
static int expected(const struct message *m)
{
    if (m->ts == NULL || m->sig == NULL || m->tslen == 0 || m->tslen > 12)
        return 0;
    for (size_t i = 0; i < m->tslen; i++)
        if (!isdigit((unsigned char)m->ts[i]))
            return 0;
    unsigned char sig[128];
    if (strict_base64(m->sig, m->siglen, sig, sizeof sig) != crypto_sign_BYTES)
        return 0;
    size_t len = m->tslen + 1 + m->bodylen;
    unsigned char *msg = malloc(len);
    memcpy(msg, m->ts, m->tslen);
    msg[m->tslen] = '|';
    if (m->bodylen)
        memcpy(msg + m->tslen + 1, m->body, m->bodylen);
    int good = crypto_sign_verify_detached(sig, msg, len, pk) == 0;
    free(msg);
    if (!good)
        return 0;
    double skew = fabs((double)time(NULL) - strtod(m->ts, NULL));
    if (fabs(skew - 300) <= 5)
        return -1;
    return skew <= 300;
}

static void push_opt(const char *s, size_t n)
{
    if (s)
        lua_pushlstring(L, s, n);
    else
        lua_pushnil(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    uint8_t mode = fuzz_u8(&in);
    int8_t delta = (int8_t)fuzz_u8(&in);
    uint8_t where = fuzz_u8(&in);
    char tsbuf[32], sigbuf[128];
    const uint8_t *rawts = NULL, *rawsig = NULL;
    size_t rawtslen = 0, rawsiglen = 0;
    if (!(mode & 1)) {
        rawts = fuzz_field(&in, &rawtslen);
        rawsig = fuzz_field(&in, &rawsiglen);
    }
    /* the body is copied: a signed-mode mutation may change it */
    uint8_t *body = malloc(in.n ? in.n : 1);
    memcpy(body, in.p, in.n);
    struct message m = {(const char *)rawts, (const char *)rawsig, rawtslen, rawsiglen, body, in.n};

    if (mode & 1) {
        snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)time(NULL) + 5 * delta);
        m.ts = tsbuf;
        m.tslen = strlen(tsbuf);
        size_t len = m.tslen + 1 + m.bodylen;
        unsigned char *msg = malloc(len), sig[crypto_sign_BYTES];
        memcpy(msg, tsbuf, m.tslen);
        msg[m.tslen] = '|';
        if (m.bodylen)
            memcpy(msg + m.tslen + 1, body, m.bodylen);
        crypto_sign_detached(sig, NULL, msg, len, sk);
        free(msg);
        uint8_t bit = (uint8_t)(1u << (where & 7));
        switch ((mode >> 3) & 3) {
        case 1:
            sig[where % sizeof sig] ^= bit;
            break;
        case 2:
            if (m.bodylen)
                body[where % m.bodylen] ^= bit;
            break;
        case 3:
            tsbuf[where % m.tslen] ^= bit;
            break;
        default:
            break;
        }
        sodium_bin2base64(sigbuf, sizeof sigbuf, sig, sizeof sig, sodium_base64_VARIANT_ORIGINAL);
        if (((mode >> 3) & 3) == 0 && (where & 0x80))
            sigbuf[(where & 0x7f) % strlen(sigbuf)] ^= 0x20; /* the text, not the bytes */
        if (mode & 0x20)
            strcat(sigbuf, "\n");
        m.sig = sigbuf;
        m.siglen = strlen(sigbuf);
    }
    if (mode & 2)
        m.ts = NULL;
    if (mode & 4)
        m.sig = NULL;

    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    push_opt(m.ts, m.tslen);
    push_opt(m.sig, m.siglen);
    lua_pushlstring(L, (const char *)body, m.bodylen);
    if (lua_pcall(L, 3, 3, 0) != LUA_OK)
        fuzz_fail("harness raised: %s", lua_tostring(L, -1));
    if (lua_isnil(L, -3))
        fuzz_fail("%s", lua_tostring(L, -2));
    FUZZ_CHECK(!lua_toboolean(L, -1), "a parsed event holds a NUL byte");
    lua_pop(L, 1);
    int verified = lua_toboolean(L, -2);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_webhook: verify %s, parse: %s\n", verified ? "accepted" : "refused",
                lua_tostring(L, -1));
    lua_pop(L, 2);
    int want = expected(&m);
    if (want >= 0)
        FUZZ_CHECK(verified == want, "webhook.verify %s a request the independent check %s",
                   verified ? "accepted" : "refused", want ? "accepts" : "refuses");
    free(body);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
