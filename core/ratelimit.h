/* ratelimit.h — per-client token buckets shared by all worker processes.
 *
 * The master creates one anonymous MAP_SHARED mapping before forking: a fixed
 * table of buckets keyed by a short byte string (a client address) and a
 * process-shared robust mutex guarding it. Keys are hashed with SipHash
 * (libsodium's crypto_shorthash) under a random key chosen at init, so clients
 * cannot aim collisions, and are stored in full: a bucket matches only on equal
 * bytes, never on the hash alone.
 *
 * Each key probes a window of RATELIMIT_WINDOW consecutive slots. A key not
 * found takes an empty slot of its window, or else replaces the entry of the
 * window seen least recently; that entry's client starts over with a full
 * bucket. The table never grows, and under extreme address churn the limiter
 * fails open (it forgets clients), never closed. ratelimit_address_key makes
 * the key of a client address, one per IPv6 network. Free of Lua. */
#ifndef STEEPLE_RATELIMIT_H
#define STEEPLE_RATELIMIT_H

#include <stddef.h>

#define RATELIMIT_KEY_MAX 64          /* bytes; an IPv6 text address is at most 45 */
#define RATELIMIT_DEFAULT_SLOTS 8192  /* what callers (and lazy init) use */
#define RATELIMIT_MAX_SLOTS (1u << 20)
#define RATELIMIT_WINDOW 8            /* slots probed per key; also the minimum size */

/* Creates the shared table of `slots` buckets, rounded up to a power of two
 * and to at least RATELIMIT_WINDOW. Call it in the master before fork: only
 * processes forked afterwards share the table. Replaces (unmaps) any table this
 * process had; must not run while another thread of this process takes tokens.
 * Returns 0, or -1 when slots exceeds RATELIMIT_MAX_SLOTS or libsodium, mmap
 * or the mutex fail; on -1 the previous table, if any, is kept. */
int ratelimit_init(size_t slots) __attribute__((warn_unused_result));

/* Unmaps this process's view of the table (other processes keep theirs). A
 * later ratelimit_take initialises a new, private table lazily. */
void ratelimit_shutdown(void);

/* Takes one token from the bucket of `key` (keylen bytes, any byte values;
 * NULL only with keylen 0). The bucket holds at most max(per_minute, 1) tokens, refills at per_minute/60
 * tokens per second, and starts full for a key not seen before (or evicted).
 * If per_minute changes between calls for the same key, the bucket is clamped
 * to the new capacity. `now` is a monotonic time in seconds (clock_mono() in
 * the server, injected by tests); a clock going backwards refills nothing.
 *
 * Returns 1 when allowed (*retry_after = 0), or 0 when limited, with
 * *retry_after = seconds until one token is available (> 0; huge, possibly
 * +inf, for a tiny per_minute). retry_after may be NULL.
 *
 * Fails open — returns 1 and records nothing — when per_minute <= 0 or is not
 * finite (unlimited), when keylen > RATELIMIT_KEY_MAX, when now is not finite,
 * when the lock cannot be taken, or when there is no table: a process that
 * never called ratelimit_init creates a private RATELIMIT_DEFAULT_SLOTS table
 * on first use (command-line tools, tests), and if that fails every take is
 * allowed. Safe across threads and processes; if a process died holding the
 * lock, the next taker recovers it (the bucket it was writing may be off by a
 * token). */
int ratelimit_take(const void *key, size_t keylen, double per_minute, double now,
                   double *retry_after) __attribute__((warn_unused_result));

/* Returns the number of buckets in use (0 without a table). Entries are
 * replaced, never removed, so this grows to at most the table size. */
size_t ratelimit_count(void);

#define RATELIMIT_ADDRESS_KEY_MAX 18 /* bytes of the longest address key */

/* Writes the bucket key of the client address `addr` (text as inet_pton reads
 * it; an IPv6 zone such as "%eth0" is ignored) into out and returns its length:
 * 5 bytes for IPv4, 18 for IPv6. An IPv6 address counts by its first
 * ipv6_prefix bits (clamped to 1..128), so that every address of one network
 * (one subscriber's /64) shares a bucket; an IPv4-mapped address
 * (::ffff:0:0/96) or one of the well-known NAT64 prefix (64:ff9b::/96) counts
 * as the IPv4 address it carries. Keys never collide with one another's kind,
 * and start with a byte below 0x20, so never equal a printable text key.
 * Returns 0, writing nothing, when addr is not an IP address. */
size_t ratelimit_address_key(const char *addr, int ipv6_prefix,
                             unsigned char out[RATELIMIT_ADDRESS_KEY_MAX])
    __attribute__((warn_unused_result));

#endif
