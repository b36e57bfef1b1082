/* spool_writer.c — the spool's writer thread: takes batches off the queue,
 * frames them, appends them to its segment with one write and one
 * fdatasync (group commit), starts a new segment when one is full or left,
 * removes a failed batch's bytes, and hands every batch to the loop through
 * the finished list and the eventfd. Owns wfd, wseq, wsize, next_seq and
 * wbuf; touches the queue, finished list and flags only under the lock. */
#include "spool_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MAX_BYTES (16u << 20) /* the writer takes at most this much (at least one record) */

void spool_writer_close(struct spool *s)
{
    if (s->wfd >= 0)
        close(s->wfd);
    s->wfd = -1;
}

/* Makes sure wfd is a segment with room; a new one gets its directory entry
 * synced. Returns 0 or an errno. */
static int writer_segment(struct spool *s)
{
    if (s->wfd >= 0 && s->wsize < SPOOL_SEGMENT_BYTES)
        return 0;
    spool_writer_close(s);
    char name[NAME_LEN];
    for (int tries = 0; tries < 100; tries++) {
        uint32_t seq = s->next_seq++;
        spool_file_name(name, s->worker, seq, K_SPOOL);
        int fd = openat(s->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return errno;
        if (fsync(s->dirfd) != 0) {
            int e = errno;
            close(fd);
            (void)unlinkat(s->dirfd, name, 0);
            return e;
        }
        s->wfd = fd;
        s->wseq = seq;
        s->wsize = 0;
        return 0;
    }
    return EEXIST;
}

/* Frames the batch into wbuf (header with CRC, payload) and notes each
 * append's offset within it. Returns the byte count, or 0 without memory. */
static size_t frame_batch(struct spool *s, struct append_list *batch)
{
    size_t total = 0;
    struct append *a;
    STAILQ_FOREACH(a, batch, link)
        total += HEADER_BYTES + a->len;
    if (total > s->wcap) {
        unsigned char *b = realloc(s->wbuf, total);
        if (b == NULL)
            return 0;
        s->wbuf = b;
        s->wcap = total;
    }
    size_t pos = 0;
    STAILQ_FOREACH(a, batch, link) {
        unsigned char *p = s->wbuf + pos;
        spool_frame_header(p, a->data, a->len);
        memcpy(p + HEADER_BYTES, a->data, a->len);
        a->off = pos;
        pos += HEADER_BYTES + a->len;
    }
    return total;
}

/* Writes n bytes of wbuf; a WRITE fault writes half of them and fails.
 * Returns 0 or an errno. */
static int write_frames(struct spool *s, size_t n, int fault_where, int fault_err)
{
    size_t limit = fault_where == SPOOL_FAULT_WRITE ? n / 2 : n, done = 0;
    while (done < limit) {
        ssize_t w = write(s->wfd, s->wbuf + done, limit - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        done += (size_t)w;
    }
    return limit < n ? fault_err : 0;
}

/* After a failed batch that began at `start`: removes its bytes so that no
 * later open can find them, and leaves the segment for good. */
static void writer_undo(struct spool *s, uint64_t start)
{
    char name[NAME_LEN];
    spool_file_name(name, s->worker, s->wseq, K_SPOOL);
    int ok = start == 0 ? unlinkat(s->dirfd, name, 0) == 0
                        : ftruncate(s->wfd, (off_t)start) == 0 && fdatasync(s->wfd) == 0;
    spool_writer_close(s);
    if (!ok) {
        pthread_mutex_lock(&s->lock);
        s->sh_undo_failed++;
        pthread_mutex_unlock(&s->lock);
    }
}

/* Writes and syncs one batch; stamps every append with seq, offset and the
 * result. Returns 1 when fdatasync was called, else 0. */
static int commit(struct spool *s, struct append_list *batch, int fault_where, int fault_err)
{
    size_t total = frame_batch(s, batch);
    int err = total == 0 ? ENOMEM : writer_segment(s);
    int synced = 0;
    uint64_t start = s->wsize;
    if (err == 0)
        err = write_frames(s, total, fault_where, fault_err);
    if (err == 0) {
        synced = 1;
        err = fault_where == SPOOL_FAULT_SYNC ? fault_err : fdatasync(s->wfd) ? errno : 0;
    }
    struct append *a;
    STAILQ_FOREACH(a, batch, link) {
        a->seq = s->wfd >= 0 ? s->wseq : 0;
        a->off += start;
        a->err = err;
    }
    if (err != 0 && s->wfd >= 0)
        writer_undo(s, start);
    else if (err == 0)
        s->wsize += total;
    return synced;
}

/* Moves up to BATCH_MAX_BYTES (at least one append) off the queue, which is
 * not empty, into the empty batch; under lock. */
static void take_batch(struct spool *s, struct append_list *batch)
{
    size_t bytes = 0;
    struct append *a;
    while ((a = STAILQ_FIRST(&s->queue)) != NULL &&
           (STAILQ_EMPTY(batch) || bytes + HEADER_BYTES + a->len <= BATCH_MAX_BYTES)) {
        STAILQ_REMOVE_HEAD(&s->queue, link);
        STAILQ_INSERT_TAIL(batch, a, link);
        bytes += HEADER_BYTES + a->len;
    }
    s->qbytes -= bytes;
}

/* Hands a committed batch to the loop (batch is left empty); under lock. */
static void finish(struct spool *s, struct append_list *batch)
{
    STAILQ_CONCAT(&s->finished, batch);
    uint64_t one = 1;
    if (write(s->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        abort(); /* only delays delivery; cannot fail in practice */
}

void *spool_writer_main(void *arg)
{
    struct spool *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stop && STAILQ_EMPTY(&s->queue))
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->stop)
            break;
        struct append_list batch = STAILQ_HEAD_INITIALIZER(batch);
        take_batch(s, &batch);
        int rotate = s->rotate, where = s->fault_where, ferr = s->fault_err;
        s->rotate = s->fault_where = 0;
        pthread_mutex_unlock(&s->lock);
        if (rotate)
            spool_writer_close(s);
        int synced = commit(s, &batch, where, ferr);
        pthread_mutex_lock(&s->lock);
        s->sh_fsyncs += (uint64_t)synced;
        s->sh_failed += STAILQ_FIRST(&batch)->err != 0;
        finish(s, &batch);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}
