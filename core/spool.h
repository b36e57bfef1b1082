/* spool.h — a durable, append-only local log of payloads (webhooks that the
 * databases cannot take right now), free of Lua.
 *
 * Each worker owns the segment files `w<i>-<seq>.spool` in one directory and
 * a lock file `w<i>.lock` it holds (flock) while open, so no two processes
 * ever use one worker's files. A record is framed as "STPL", u32le payload
 * length, u32le CRC-32C of the payload, then the payload. Appends go through
 * a writer thread that commits everything queued with one write and one
 * fdatasync (group commit); their callbacks run on the loop thread once the
 * batch is durable, or has failed. Applied progress of a segment is kept in
 * `w<i>-<seq>.done`: a first line with the byte offset below which every
 * record is applied, then (only when some are) a second line that marks the
 * records past it that are applied too, out of order: hex bytes of a bitmap
 * whose bit k (byte k / 8, value 1 << k % 8) stands for the k-th record from
 * that offset. A file of one line is the format of earlier versions, which
 * read the first line of the new one and replay the marked records again.
 *
 * Threads: every function here must be called on the loop thread of the
 * event_base given to spool_open (callbacks run there too). */
#ifndef STEEPLE_SPOOL_H
#define STEEPLE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#define SPOOL_MAX_RECORD (4u << 20)    /* payload bytes; larger appends are refused */
#define SPOOL_SEGMENT_BYTES (8u << 20) /* a segment past this size is not appended to */

struct event_base;
struct spool;

/* Names one record of an open spool (not stable across spool_open). Fits in
 * a Lua integer when cast through lua_Unsigned. */
typedef uint64_t spool_id;

struct spool_record {
    spool_id id;
    const void *data; /* owned by the spool: valid until the next spool_peek or spool_free */
    size_t len;
};

struct spool_stats {
    size_t files;           /* segment files held (own and adopted) */
    size_t pending;         /* durable records not yet done */
    uint64_t pending_bytes; /* their payload bytes */
    uint64_t skipped_bytes; /* bytes past a torn or corrupt record, never handed out */
    uint64_t fsyncs;        /* fdatasync calls made for batches */
    uint64_t failed_batches;
};

/* Called on the loop thread once: err NULL means the record is durable;
 * otherwise err (valid during the call) says why it is not, e.g. "No space
 * left on device" or "stopping". The callback must not call spool_free. */
typedef void (*spool_cb)(void *arg, const char *err);

/* Makes sure dir is a directory this process can write: creates it (mode
 * 0700) and its missing parents (0755, as mkdir -p; other users' servers,
 * such as PostgreSQL in var/, may live beside it). Returns 0, or -1 with a
 * message naming the path in err (a bad path or permissions, which a retry
 * will not mend). */
int spool_prepare_dir(const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Opens (spool_prepare_dir first) the spool directory
 * for worker `worker` of `nworkers`, validates its segments and, for worker
 * 0, adopts those of workers >= nworkers. Torn or corrupt records end their
 * segment's valid part and are logged (log_warn). Starts the writer thread.
 * Returns the spool, or NULL with a message in err (for example when another
 * process holds this worker's lock). */
struct spool *spool_open(struct event_base *base, const char *dir, int worker, int nworkers,
                         char *err, size_t errlen) __attribute__((warn_unused_result));

/* Copies len bytes of data and queues them; cb(arg, err) is called later on
 * the loop thread, never from inside this call. Returns 0, or -1 with errno
 * EMSGSIZE (len > SPOOL_MAX_RECORD), EAGAIN (too many bytes queued),
 * ESHUTDOWN (spool_free has begun) or ENOMEM; cb is then never called. */
int spool_append(struct spool *s, const void *data, size_t len, spool_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* The caller behind arg went away: the callbacks of its outstanding appends
 * will not be called. The records still become durable if their batch
 * succeeds. */
void spool_cancel(struct spool *s, void *arg);

/* Durable records not yet done (appended since open or found at open). */
size_t spool_pending(const struct spool *s);

/* Fills out[0..*n) with the oldest not-done durable records, oldest first
 * (this worker's own segments by seq, then adopted ones by worker and seq,
 * then new ones), without marking them. *n <= max; fewer when their
 * payloads pass 16 MiB together (never fewer than one if any is pending).
 * The records' data is owned by the spool and stays valid until the next
 * spool_peek or spool_free. A record that no longer matches its checksum
 * ends its segment's valid part (logged, counted in skipped_bytes) and is
 * never returned. Returns 0, or -1 with errno on a read error. */
int spool_peek(struct spool *s, size_t max, struct spool_record *out, size_t *n)
    __attribute__((warn_unused_result));

/* As spool_peek, from the record `from` on: ids increase from the oldest
 * record to the newest, so passing the last id handed out plus one pages
 * through the records not done (0 is the start). */
int spool_peek_from(struct spool *s, spool_id from, size_t max, struct spool_record *out,
                    size_t *n) __attribute__((warn_unused_result));

/* Marks one record applied (again is harmless), in any order. Progress is
 * written to the segment's .done file, soon after on the loop or at
 * spool_free: the offset up to the first record not done, and the records
 * done past it; a segment with every record done, not being appended to, is
 * deleted. Returns 0, or -1 (errno ENOENT) for an id that is
 * not a record of this spool or whose segment is gone. */
int spool_done(struct spool *s, spool_id id) __attribute__((warn_unused_result));

void spool_stats(const struct spool *s, struct spool_stats *out);

/* Stops accepting appends, waits for the batch being written, calls every
 * callback still owed (queued appends get err "stopping"), saves progress
 * and frees the spool. NULL is allowed. */
void spool_free(struct spool *s);

/* For the tests: makes the next batch fail with errno_value, either while
 * writing (only the first half of its bytes reach the file) or at
 * fdatasync (all of them do). */
enum spool_fault { SPOOL_FAULT_WRITE = 1, SPOOL_FAULT_SYNC };
void spool_set_fault(struct spool *s, enum spool_fault where, int errno_value);

/* CRC-32C (Castagnoli) of len bytes; exposed for the tests. */
uint32_t spool_crc32c(const void *data, size_t len);

#endif
