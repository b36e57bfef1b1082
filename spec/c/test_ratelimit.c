/* test_ratelimit.c — shared token buckets, across processes too. */
#include "ratelimit.h"
#include "tap.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T0 1000.0 /* an arbitrary monotonic start time */

static int take(const char *key, double per_minute, double now, double *retry_after)
{
    return ratelimit_take(key, strlen(key), per_minute, now, retry_after);
}

static int near(double a, double b)
{
    return fabs(a - b) < 1e-6;
}

/* Waits for pid; returns its exit status, or -1 when it did not exit. */
static int exit_status(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static void capacity_then_limited(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry = -1;
    for (int i = 0; i < 3; i++) {
        CHECK(take("10.0.0.1", 3, T0, &retry) == 1);
        CHECK(retry == 0);
    }
    CHECK(take("10.0.0.1", 3, T0, &retry) == 0);
    CHECK(near(retry, 20)); /* 3 a minute: one token every 20 s */
    CHECK(take("10.0.0.1", 3, T0 + 5, &retry) == 0);
    CHECK(near(retry, 15));
    CHECK(ratelimit_count() == 1);
    ratelimit_shutdown();
}

static void refills_over_time(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry;
    for (int i = 0; i < 3; i++)
        CHECK(take("k", 3, T0, &retry) == 1);
    CHECK(take("k", 3, T0 + 19.9, &retry) == 0);
    CHECK(near(retry, 0.1));
    CHECK(take("k", 3, T0 + 20, &retry) == 1);
    CHECK(take("k", 3, T0 + 20, &retry) == 0);
    /* ten idle minutes refill to capacity, not beyond */
    for (int i = 0; i < 3; i++)
        CHECK(take("k", 3, T0 + 620, &retry) == 1);
    CHECK(take("k", 3, T0 + 620, &retry) == 0);
    /* a clock going backwards refills nothing */
    CHECK(take("k", 3, T0, &retry) == 0);
    ratelimit_shutdown();
}

static void below_one_per_minute_allows_one(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry;
    CHECK(take("slow", 0.5, T0, &retry) == 1); /* capacity is at least 1 token */
    CHECK(take("slow", 0.5, T0, &retry) == 0);
    CHECK(near(retry, 120));
    CHECK(take("slow", 0.5, T0 + 120, &retry) == 1);
    ratelimit_shutdown();
}

static void non_positive_rate_is_unlimited(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry = -1;
    for (int i = 0; i < 1000; i++) {
        CHECK(take("u", 0, T0, &retry) == 1);
        CHECK(take("u", -5, T0, &retry) == 1);
        CHECK(take("u", NAN, T0, &retry) == 1);
        CHECK(take("u", INFINITY, T0, &retry) == 1);
    }
    CHECK(retry == 0);
    CHECK(ratelimit_count() == 0); /* nothing recorded */
    ratelimit_shutdown();
}

static void keys_are_independent(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry;
    CHECK(take("a", 1, T0, &retry) == 1);
    CHECK(take("a", 1, T0, &retry) == 0);
    CHECK(take("b", 1, T0, &retry) == 1);
    CHECK(take("b", 1, T0, &retry) == 0);
    CHECK(take("a", 1, T0, &retry) == 0);
    CHECK(ratelimit_count() == 2);
    ratelimit_shutdown();
}

static void keys_differing_late_are_distinct(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry;
    unsigned char k1[RATELIMIT_KEY_MAX], k2[RATELIMIT_KEY_MAX];
    memset(k1, 'x', sizeof k1);
    memcpy(k2, k1, sizeof k2);
    k2[RATELIMIT_KEY_MAX - 1] = 'y';
    CHECK(ratelimit_take(k1, sizeof k1, 1, T0, &retry) == 1);
    CHECK(ratelimit_take(k2, sizeof k2, 1, T0, &retry) == 1);
    CHECK(ratelimit_take(k1, sizeof k1, 1, T0, &retry) == 0);
    /* a prefix is another key; so are keys with NUL bytes */
    CHECK(take("10.0.0.1", 1, T0, &retry) == 1);
    CHECK(take("10.0.0.10", 1, T0, &retry) == 1);
    CHECK(ratelimit_take("a\0b", 3, 1, T0, &retry) == 1);
    CHECK(ratelimit_take("a\0c", 3, 1, T0, &retry) == 1);
    CHECK(ratelimit_take("a", 1, 1, T0, &retry) == 1);
    CHECK(ratelimit_take("", 0, 1, T0, &retry) == 1);
    CHECK(ratelimit_take("", 0, 1, T0, &retry) == 0);
    CHECK(ratelimit_count() == 8);
    ratelimit_shutdown();
}

static void long_keys_fail_open(void)
{
    CHECK(ratelimit_init(64) == 0);
    char key[RATELIMIT_KEY_MAX + 2];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    double retry;
    for (int i = 0; i < 10; i++)
        CHECK(take(key, 1, T0, &retry) == 1);
    CHECK(ratelimit_count() == 0);
    ratelimit_shutdown();
}

static void full_windows_evict_the_least_recent(void)
{
    CHECK(ratelimit_init(16) == 0);
    double retry, now = T0;
    CHECK(take("victim", 1, now, &retry) == 1);
    CHECK(take("victim", 1, now, &retry) == 0);
    char key[32], prev[32] = "victim";
    int allowed = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "client-%d", i);
        now += 0.001;
        allowed += take(key, 1, now, &retry);
        CHECK(ratelimit_count() <= 16);
        /* the key used just before is never the one replaced */
        if (i > 0)
            CHECK(take(prev, 1, now, &retry) == 0);
        memcpy(prev, key, sizeof prev);
    }
    CHECK(allowed == 1000); /* a new or evicted key starts with a full bucket */
    CHECK(ratelimit_count() == 16);
    /* "victim" was forgotten: it fails open with a full bucket */
    CHECK(take("victim", 1, now, &retry) == 1);
    CHECK(ratelimit_init(3) == 0); /* rounded up to one window */
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "c%d", i);
        CHECK(take(key, 1, T0 + i, &retry) == 1);
    }
    CHECK(ratelimit_count() == RATELIMIT_WINDOW);
    ratelimit_shutdown();
}

static void child_takes_parent_sees(void)
{
    CHECK(ratelimit_init(64) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = 1;
        for (int i = 0; i < 5; i++)
            ok &= take("shared", 5, T0, NULL) == 1;
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0 && exit_status(pid) == 0);
    double retry;
    CHECK(take("shared", 5, T0, &retry) == 0);
    CHECK(near(retry, 12));
    CHECK(ratelimit_count() == 1);
    ratelimit_shutdown();
}

static void concurrent_children_share_one_bucket(void)
{
    CHECK(ratelimit_init(64) == 0);
    enum { CHILDREN = 4, TRIES = 250, LIMIT = 500 };
    int start[2];
    CHECK(pipe(start) == 0);
    pid_t pids[CHILDREN];
    for (int c = 0; c < CHILDREN; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            char byte;
            close(start[1]);
            (void)!read(start[0], &byte, 1); /* all start together at EOF */
            int allowed = 0;
            for (int i = 0; i < TRIES; i++)
                allowed += take("busy", LIMIT, T0, NULL);
            _exit(allowed); /* <= TRIES < 256 */
        }
    }
    close(start[0]);
    close(start[1]);
    int total = 0;
    for (int c = 0; c < CHILDREN; c++) {
        int status = pids[c] > 0 ? exit_status(pids[c]) : -1;
        CHECK(status >= 0);
        total += status;
    }
    CHECK(total == LIMIT); /* exactly the capacity: no update lost, none doubled */
    ratelimit_shutdown();
}

static void survives_children_killed_mid_take(void)
{
    CHECK(ratelimit_init(64) == 0);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (double now = T0;; now += 1e-3)
                (void)take("hot", 1e6, now, NULL);
        }
        nanosleep(&(struct timespec){.tv_nsec = 2 * 1000 * 1000}, NULL);
        kill(pid, SIGKILL);
        CHECK(exit_status(pid) == -1);
    }
    alarm(10); /* a lock left dead would hang here */
    double retry;
    CHECK(take("after", 1, T0, &retry) == 1);
    CHECK(take("after", 1, T0, &retry) == 0);
    alarm(0);
    ratelimit_shutdown();
}

static void initialises_lazily(void)
{
    ratelimit_shutdown();
    CHECK(ratelimit_count() == 0);
    double retry;
    CHECK(take("lazy", 1, T0, &retry) == 1);
    CHECK(take("lazy", 1, T0, &retry) == 0);
    CHECK(near(retry, 60));
    CHECK(ratelimit_count() == 1);
    ratelimit_shutdown();
}

static void bad_sizes_keep_the_table(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry;
    CHECK(take("kept", 1, T0, &retry) == 1);
    CHECK(ratelimit_init((size_t)RATELIMIT_MAX_SLOTS + 1) == -1);
    CHECK(take("kept", 1, T0, &retry) == 0);
    ratelimit_shutdown();
}

/* The key of addr with prefix, as a comparable string ("" when not an address). */
struct key {
    unsigned char bytes[RATELIMIT_ADDRESS_KEY_MAX];
    size_t len;
};

static struct key key_of(const char *addr, int prefix)
{
    struct key k;
    memset(&k, 0xaa, sizeof k);
    k.len = ratelimit_address_key(addr, prefix, k.bytes);
    return k;
}

static int same_key(const char *a, const char *b, int prefix)
{
    struct key ka = key_of(a, prefix), kb = key_of(b, prefix);
    return ka.len > 0 && ka.len == kb.len && memcmp(ka.bytes, kb.bytes, ka.len) == 0;
}

static void ipv4_keys(void)
{
    struct key k = key_of("198.51.100.7", 64);
    CHECK(k.len == 5);
    CHECK(k.bytes[0] == 4 && k.bytes[1] == 198 && k.bytes[2] == 51 && k.bytes[3] == 100 && k.bytes[4] == 7);
    CHECK(!same_key("198.51.100.7", "198.51.100.8", 64)); /* IPv4 is never grouped */
    CHECK(same_key("198.51.100.7", "::ffff:198.51.100.7", 64));
    CHECK(same_key("198.51.100.7", "::FFFF:c633:6407", 128));
    CHECK(same_key("198.51.100.7", "64:ff9b::198.51.100.7", 64));
    CHECK(!same_key("198.51.100.7", "::198.51.100.7", 64)); /* IPv4-compatible: plain IPv6 */
}

static void ipv6_keys_by_prefix(void)
{
    struct key k = key_of("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64);
    CHECK(k.len == 18);
    CHECK(k.bytes[0] == 6 && k.bytes[1] == 64);
    static const unsigned char net[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2};
    CHECK(memcmp(k.bytes + 2, net, 16) == 0);
    CHECK(same_key("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", 64));
    CHECK(same_key("2001:db8:1:2::1", "2001:0DB8:0001:0002:0:0:0:2", 64));
    CHECK(!same_key("2001:db8:1:2::1", "2001:db8:1:3::1", 64));
    CHECK(!same_key("2001:db8:1:2::1", "2001:db8:1:2::2", 128));
    CHECK(same_key("2001:db8:1:2::1", "2001:db8:1:2::1", 128));
    /* a prefix inside a byte: /60 keeps 4 bits of the 8th byte */
    CHECK(same_key("2001:db8:1:20::1", "2001:db8:1:2f::1", 60));
    CHECK(!same_key("2001:db8:1:20::1", "2001:db8:1:30::1", 60));
    CHECK(same_key("2001:db8::1", "3fff::1", 1)); /* both start with a 0 bit */
    CHECK(!same_key("2001:db8::1", "8001:db8::1", 1));
    /* one address under two prefixes: two keys */
    struct key k48 = key_of("2001:db8::1", 48), k64 = key_of("2001:db8::1", 64);
    CHECK(memcmp(k48.bytes, k64.bytes, 18) != 0);
    /* out of range prefixes are clamped */
    CHECK(key_of("2001:db8::1", 0).bytes[1] == 1);
    CHECK(key_of("2001:db8::1", 500).bytes[1] == 128);
}

static void ipv6_zones_are_ignored(void)
{
    CHECK(same_key("fe80::1%eth0", "fe80::2%lo", 64));
    CHECK(same_key("fe80::1%eth0", "fe80::1", 128));
}

static void non_addresses_have_no_key(void)
{
    static const char *bad[] = {"", "localhost", "1.2.3", "1.2.3.4.5", "256.1.1.1", "::1::1", "2001:db8::g",
                                " 1.2.3.4", "1.2.3.4 ", "%eth0",
                                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct key k = key_of(bad[i], 64);
        CHECK(k.len == 0);
        CHECK(k.bytes[0] == 0xaa); /* nothing written */
    }
    char longer[256];
    memset(longer, '1', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    CHECK(key_of(longer, 64).len == 0);
    CHECK(key_of("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 64).len == 18); /* the longest text */
}

static void address_keys_share_buckets(void)
{
    CHECK(ratelimit_init(64) == 0);
    double retry;
    struct key a = key_of("2001:db8:5::1", 64), b = key_of("2001:db8:5::2", 64), c = key_of("2001:db8:6::1", 64);
    CHECK(ratelimit_take(a.bytes, a.len, 1, T0, &retry) == 1);
    CHECK(ratelimit_take(b.bytes, b.len, 1, T0, &retry) == 0);
    CHECK(ratelimit_take(c.bytes, c.len, 1, T0, &retry) == 1);
    ratelimit_shutdown();
}

static const struct tap_case cases[] = {
    {"capacity, then limited with the right retry_after", capacity_then_limited},
    {"tokens refill over time, up to the capacity", refills_over_time},
    {"below one a minute still allows one token", below_one_per_minute_allows_one},
    {"per_minute <= 0 or not finite is unlimited", non_positive_rate_is_unlimited},
    {"different keys are independent", keys_are_independent},
    {"keys differing late, by length or after a NUL are distinct",
     keys_differing_late_are_distinct},
    {"keys over 64 bytes fail open", long_keys_fail_open},
    {"a full window evicts the least recently seen key; the table stays bounded",
     full_windows_evict_the_least_recent},
    {"a child takes tokens, the parent sees them gone", child_takes_parent_sees},
    {"concurrent children share one bucket exactly", concurrent_children_share_one_bucket},
    {"the lock survives children killed mid-take", survives_children_killed_mid_take},
    {"an uninitialised process initialises lazily", initialises_lazily},
    {"a bad size keeps the previous table", bad_sizes_keep_the_table},
    {"IPv4 addresses key by themselves, IPv4-mapped and NAT64 ones too", ipv4_keys},
    {"IPv6 addresses key by their prefix", ipv6_keys_by_prefix},
    {"an IPv6 zone is ignored", ipv6_zones_are_ignored},
    {"text that is no address has no key", non_addresses_have_no_key},
    {"addresses of one /64 share a bucket", address_keys_share_buckets},
};

TAP_MAIN(cases)
