/* ratelimit.c — shared token buckets (see ratelimit.h). */
#include "ratelimit.h"
#include "shm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <string.h>

struct bucket {
    uint64_t hash;
    double tokens;
    double last;        /* last take: refill start, and eviction picks the oldest */
    unsigned char used; /* 0 for a never-used slot */
    unsigned char keylen;
    unsigned char key[RATELIMIT_KEY_MAX];
};

struct region {
    pthread_mutex_t lock; /* process-shared, robust */
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    size_t mask; /* slots - 1 */
    size_t used; /* buckets in use; written under lock */
    struct bucket buckets[];
};

static struct region *region; /* accessed atomically; swapped under init_lock */
static size_t region_size;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER; /* this process only */

/* Returns slots rounded up to a power of two >= RATELIMIT_WINDOW, or 0 when
 * too large. */
static size_t round_slots(size_t slots)
{
    if (slots > RATELIMIT_MAX_SLOTS)
        return 0;
    size_t n = RATELIMIT_WINDOW;
    while (n < slots)
        n <<= 1;
    return n;
}

/* Maps and fills in a new region; returns NULL on failure. */
static struct region *region_create(size_t slots, size_t *size)
{
    size_t n = round_slots(slots);
    if (n == 0 || sodium_init() < 0)
        return NULL;
    *size = sizeof(struct region) + n * sizeof(struct bucket);
    void *p = shm_map(*size);
    if (p == NULL)
        return NULL;
    struct region *r = p; /* zero-filled by the kernel: every bucket unused */
    if (shm_mutex_init(&r->lock) != 0) {
        shm_unmap(p, *size);
        return NULL;
    }
    crypto_shorthash_keygen(r->hash_key);
    r->mask = n - 1;
    return r;
}

/* Unmaps the current region; the caller holds init_lock. */
static void region_drop(void)
{
    struct region *r = __atomic_load_n(&region, __ATOMIC_ACQUIRE);
    __atomic_store_n(&region, NULL, __ATOMIC_RELEASE);
    if (r != NULL)
        shm_unmap(r, region_size);
}

int ratelimit_init(size_t slots)
{
    size_t size = 0;
    struct region *r = region_create(slots, &size);
    if (r == NULL)
        return -1;
    pthread_mutex_lock(&init_lock);
    region_drop();
    region_size = size;
    __atomic_store_n(&region, r, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&init_lock);
    return 0;
}

void ratelimit_shutdown(void)
{
    pthread_mutex_lock(&init_lock);
    region_drop();
    pthread_mutex_unlock(&init_lock);
}

/* Returns this process's region, creating a private default one on first use;
 * NULL when that fails. */
static struct region *current(void)
{
    struct region *r = __atomic_load_n(&region, __ATOMIC_ACQUIRE);
    if (r != NULL)
        return r;
    pthread_mutex_lock(&init_lock);
    r = __atomic_load_n(&region, __ATOMIC_ACQUIRE);
    size_t size = 0;
    if (r == NULL && (r = region_create(RATELIMIT_DEFAULT_SLOTS, &size)) != NULL) {
        region_size = size;
        __atomic_store_n(&region, r, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&init_lock);
    return r;
}

/* Takes the shared lock, recovering it from a process that died holding it (a
 * bucket is not critical data). Returns 0, or -1 when the lock is unusable. */
static uint64_t key_hash(const struct region *r, const void *key, size_t keylen)
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, key, keylen, r->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h;
}

static int same_key(const struct bucket *b, uint64_t h, const void *key, size_t keylen)
{
    return b->hash == h && b->keylen == keylen && memcmp(b->key, key, keylen) == 0;
}

static void bucket_reset(struct bucket *b, uint64_t h, const void *key, size_t keylen,
                         double now, double cap)
{
    b->hash = h;
    b->keylen = (unsigned char)keylen;
    memcpy(b->key, key, keylen);
    b->tokens = cap;
    b->last = now;
    b->used = 1;
}

/* Returns the bucket of key in its window, claiming an empty slot or else the
 * least recently seen one (starting full). Called under the lock. */
static struct bucket *find_or_claim(struct region *r, const void *key, size_t keylen,
                                    double now, double cap)
{
    uint64_t h = key_hash(r, key, keylen);
    struct bucket *empty = NULL, *oldest = NULL;
    for (size_t p = 0; p < RATELIMIT_WINDOW; p++) {
        struct bucket *b = &r->buckets[(h + p) & r->mask];
        if (!b->used) {
            if (empty == NULL)
                empty = b;
        } else if (same_key(b, h, key, keylen)) {
            return b;
        } else if (oldest == NULL || b->last < oldest->last) {
            oldest = b;
        }
    }
    struct bucket *b = empty != NULL ? empty : oldest;
    if (empty != NULL)
        r->used++;
    bucket_reset(b, h, key, keylen, now, cap);
    return b;
}

/* Refills b up to now and takes one token. Returns 1, or 0 with *wait set to
 * the seconds until a token is available. Called under the lock. */
static int bucket_take(struct bucket *b, double per_minute, double cap, double now,
                       double *wait)
{
    double elapsed = now - b->last;
    if (elapsed > 0) {
        b->tokens += elapsed * per_minute / 60;
        b->last = now;
    }
    if (!(b->tokens <= cap)) /* also repairs a NaN */
        b->tokens = cap;
    if (b->tokens < 0)
        b->tokens = 0;
    if (b->tokens >= 1) {
        b->tokens -= 1;
        *wait = 0;
        return 1;
    }
    *wait = (1 - b->tokens) * 60 / per_minute;
    return 0;
}

int ratelimit_take(const void *key, size_t keylen, double per_minute, double now,
                   double *retry_after)
{
    double wait = 0;
    int allowed = 1;
    struct region *r;
    if (key == NULL)
        key = ""; /* with keylen 0 only */
    if (per_minute > 0 && isfinite(per_minute) && isfinite(now) &&
        keylen <= RATELIMIT_KEY_MAX && (r = current()) != NULL && shm_mutex_lock(&r->lock) == 0) {
        double cap = per_minute < 1 ? 1 : per_minute;
        struct bucket *b = find_or_claim(r, key, keylen, now, cap);
        allowed = bucket_take(b, per_minute, cap, now, &wait);
        pthread_mutex_unlock(&r->lock);
    }
    if (retry_after != NULL)
        *retry_after = wait;
    return allowed;
}

size_t ratelimit_count(void)
{
    struct region *r = __atomic_load_n(&region, __ATOMIC_ACQUIRE);
    if (r == NULL || shm_mutex_lock(&r->lock) != 0)
        return 0;
    size_t n = r->used;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* ---- address keys --------------------------------------------------------- */

enum { KEY_IPV4 = 4, KEY_IPV6 = 6 }; /* the first byte of a key */

_Static_assert(RATELIMIT_ADDRESS_KEY_MAX <= RATELIMIT_KEY_MAX, "address keys must fit a bucket");
_Static_assert(INET6_ADDRSTRLEN == 46, "the longest IPv6 text and its NUL");

static size_t ipv4_key(unsigned char *out, const unsigned char addr[4])
{
    out[0] = KEY_IPV4;
    memcpy(out + 1, addr, 4);
    return 5;
}

/* True when the IPv6 address carries an IPv4 one in its last 32 bits:
 * IPv4-mapped (::ffff:0:0/96) or the well-known NAT64 prefix (64:ff9b::/96). */
static int embeds_ipv4(const unsigned char a[16])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    return memcmp(a, mapped, 12) == 0 || memcmp(a, nat64, 12) == 0;
}

static size_t ipv6_key(unsigned char *out, const unsigned char addr[16], int prefix)
{
    out[0] = KEY_IPV6;
    out[1] = (unsigned char)prefix;
    unsigned char *net = out + 2;
    memset(net, 0, 16);
    int whole = prefix / 8, rest = prefix % 8;
    memcpy(net, addr, (size_t)whole);
    if (rest > 0)
        net[whole] = (unsigned char)(addr[whole] & (0xff << (8 - rest)));
    return 18;
}

size_t ratelimit_address_key(const char *addr, int ipv6_prefix,
                             unsigned char out[RATELIMIT_ADDRESS_KEY_MAX])
{
    char text[INET6_ADDRSTRLEN];
    size_t n = strcspn(addr, "%"); /* a zone names a link, not a client */
    if (n >= sizeof text)
        return 0;
    memcpy(text, addr, n);
    text[n] = '\0';
    struct in_addr v4;
    if (inet_pton(AF_INET, text, &v4) == 1)
        return ipv4_key(out, (const unsigned char *)&v4.s_addr);
    struct in6_addr v6;
    if (inet_pton(AF_INET6, text, &v6) != 1)
        return 0;
    if (embeds_ipv4(v6.s6_addr))
        return ipv4_key(out, v6.s6_addr + 12);
    int prefix = ipv6_prefix < 1 ? 1 : ipv6_prefix > 128 ? 128 : ipv6_prefix;
    return ipv6_key(out, v6.s6_addr, prefix);
}
