/* spool_index.c — the loop thread's index of the spool: segments (s->segs)
 * and their records, the pending counts, done marks and the done offset,
 * cutting a segment at a bad record, peeking, marking done, and the deferred
 * flush that saves progress and deletes finished segments. Loop thread only
 * (it asks the writer to rotate through the shared flag, under the lock). */
#include "log.h"
#include "spool_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#define PEEK_MAX_BYTES (16u << 20)

/* ---- segments and records --------------------------------------------------- */

static spool_id make_id(const struct seg *g, uint32_t i)
{
    return (spool_id)g->num << 32 | i;
}

struct seg *seg_new(struct spool *s, int worker, uint32_t seq)
{
    struct seg *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->worker = worker;
    g->seq = seq;
    g->num = s->next_num++;
    g->fd = -1;
    g->hole = NO_HOLE;
    return g;
}

void seg_free(struct seg *g)
{
    if (g->fd >= 0)
        close(g->fd);
    free(g->recs);
    free(g);
}

int seg_add(struct spool *s, struct seg *g, uint64_t off, uint32_t len)
{
    if (g->nrecs == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 64;
        struct rec *r = cap > g->cap ? realloc(g->recs, cap * sizeof *r) : NULL;
        if (r == NULL)
            return -1;
        g->recs = r;
        g->cap = cap;
    }
    g->recs[g->nrecs++] = (struct rec){off, len, 0};
    g->end = off + HEADER_BYTES + len;
    g->npending++;
    s->pending++;
    s->pending_bytes += len;
    return 0;
}

void seg_mark_done(struct spool *s, struct seg *g, uint32_t i)
{
    struct rec *r = &g->recs[i];
    if (r->done)
        return;
    r->done = 1;
    g->npending--;
    s->pending--;
    s->pending_bytes -= r->len;
    g->dirty = 1;
}

void seg_advance(struct seg *g)
{
    while (g->head < g->nrecs && g->recs[g->head].done && g->recs[g->head].off == g->done_off) {
        g->done_off += HEADER_BYTES + g->recs[g->head].len;
        g->head++;
        g->dirty = 1;
    }
}

static struct seg *find_seg(const struct spool *s, uint32_t num)
{
    struct seg *g;
    TAILQ_FOREACH(g, &s->segs, link)
        if (g->num == num)
            return g;
    return NULL;
}

static int seg_deletable(const struct spool *s, const struct seg *g)
{
    return g != s->active && g->npending == 0 && g->hole == NO_HOLE;
}

/* How many records from recs[head] on a bitmap of the .done file can name:
 * those that follow each other from done_off without a gap (a record that
 * could not be indexed ends them). */
uint32_t seg_markable(const struct seg *g)
{
    uint64_t off = g->done_off;
    uint32_t i = g->head;
    while (i < g->nrecs && g->recs[i].off == off) {
        off += HEADER_BYTES + g->recs[i].len;
        i++;
    }
    return i - g->head;
}

void seg_cut_at(struct spool *s, struct seg *g, uint64_t off, uint64_t size,
                enum spool_rec_state why)
{
    char name[NAME_LEN];
    seg_file(name, g, K_SPOOL);
    g->skipped += size - off;
    s->skipped_bytes += size - off;
    log_warn("spool: %s/%s: %s at offset %" PRIu64 "; %" PRIu64 " bytes from there are skipped",
             s->dir, name, spool_rec_state_text(why), off, size - off);
}

/* Drops g's records from index i on: the record there went bad. */
static void seg_cut_index(struct spool *s, struct seg *g, uint32_t i, enum spool_rec_state why)
{
    uint64_t off = g->recs[i].off;
    seg_cut_at(s, g, off, g->end, why);
    for (uint32_t k = i; k < g->nrecs; k++)
        if (!g->recs[k].done) {
            g->npending--;
            s->pending--;
            s->pending_bytes -= g->recs[k].len;
        }
    g->nrecs = i;
    g->end = off;
    if (g == s->active) { /* never append after a bad record */
        pthread_mutex_lock(&s->lock);
        s->rotate = 1;
        pthread_mutex_unlock(&s->lock);
    }
}

/* ---- durable appends -------------------------------------------------------- */

/* The index entry of the writer's segment `seq`, created at the tail when new. */
static struct seg *own_seg(struct spool *s, uint32_t seq)
{
    struct seg *tail = TAILQ_LAST(&s->segs, seg_list);
    if (tail && tail->worker == s->worker && tail->seq == seq)
        return tail;
    struct seg *g = seg_new(s, s->worker, seq);
    if (g)
        TAILQ_INSERT_TAIL(&s->segs, g, link);
    return g;
}

/* A record that cannot be indexed (no memory) leaves a hole: progress stops
 * before it, so a restart replays it. */
void spool_index_durable(struct spool *s, const struct append *a)
{
    struct seg *g = own_seg(s, a->seq);
    if (g == NULL) {
        log_error("spool: out of memory indexing a record; it is replayed after a restart");
        return;
    }
    s->active = g;
    if (a->off != g->end && g->hole == NO_HOLE)
        g->hole = g->end; /* an earlier record was not indexed */
    if (seg_add(s, g, a->off, a->len) != 0) {
        if (g->hole == NO_HOLE || a->off < g->hole)
            g->hole = a->off;
        log_error("spool: out of memory indexing a record; it is replayed after a restart");
    }
}

/* ---- saving progress -------------------------------------------------------- */

void spool_flush(struct spool *s)
{
    struct seg *g, *next;
    for (g = TAILQ_FIRST(&s->segs); g; g = next) {
        next = TAILQ_NEXT(g, link);
        if (seg_deletable(s, g)) {
            seg_remove_files(s, g);
            TAILQ_REMOVE(&s->segs, g, link);
            seg_free(g);
        } else if (g->dirty) {
            seg_write_done(s, g);
        }
    }
}

void spool_on_flush(evutil_socket_t fd, short what, void *arg)
{
    spool_flush(arg);
}

void spool_schedule_flush(struct spool *s)
{
    event_active(s->flush_ev, EV_TIMEOUT, 1); /* no-op when already active */
}

/* ---- peeking and marking done ----------------------------------------------- */

/* Picks the records to peek, from id `from` on, into out (data still NULL).
 * Segments are listed in the order of their numbers, the high half of ids. */
static size_t peek_pick(const struct spool *s, spool_id from, size_t max,
                        struct spool_record *out, size_t *bytes)
{
    uint32_t from_num = (uint32_t)(from >> 32), from_i = (uint32_t)from;
    size_t n = 0;
    *bytes = 0;
    for (const struct seg *g = TAILQ_FIRST(&s->segs); g && n < max; g = TAILQ_NEXT(g, link)) {
        if (g->num < from_num)
            continue;
        uint32_t first = g->num == from_num && from_i > g->head ? from_i : g->head;
        for (uint32_t i = first; i < g->nrecs && n < max; i++) {
            const struct rec *r = &g->recs[i];
            if (r->done)
                continue;
            if (n > 0 && *bytes + r->len > PEEK_MAX_BYTES)
                return n;
            out[n++] = (struct spool_record){make_id(g, i), NULL, r->len};
            *bytes += r->len;
        }
    }
    return n;
}

/* Reads a picked record to dst. Returns 0, 1 when it went bad (and was cut
 * off), or -1 with errno. */
static int peek_read(struct spool *s, spool_id id, unsigned char *dst)
{
    struct seg *g = find_seg(s, (uint32_t)(id >> 32));
    uint32_t i = (uint32_t)id, len;
    if (g->fd < 0) {
        char name[NAME_LEN];
        seg_file(name, g, K_SPOOL);
        g->fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (g->fd < 0)
            return -1;
    }
    const struct rec *r = &g->recs[i];
    enum spool_rec_state st = spool_read_record(g->fd, r->off, g->end, dst, r->len, &len);
    if (st == REC_OK && len != r->len)
        st = REC_CORRUPT;
    if (st == REC_IO)
        return -1;
    if (st == REC_OK)
        return 0;
    seg_cut_index(s, g, i, st);
    return 1;
}

/* One attempt at spool_peek: 1 means a record went bad; try again. */
static int peek_once(struct spool *s, spool_id from, size_t max, struct spool_record *out,
                     size_t *n)
{
    size_t bytes;
    *n = peek_pick(s, from, max, out, &bytes);
    if (bytes + 1 > s->peekcap) {
        unsigned char *b = realloc(s->peekbuf, bytes + 1);
        if (b == NULL)
            return errno = ENOMEM, -1;
        s->peekbuf = b;
        s->peekcap = bytes + 1;
    }
    size_t pos = 0;
    for (size_t k = 0; k < *n; k++) {
        int rc = peek_read(s, out[k].id, s->peekbuf + pos);
        if (rc != 0)
            return rc;
        out[k].data = s->peekbuf + pos;
        pos += out[k].len;
    }
    return 0;
}

int spool_peek_from(struct spool *s, spool_id from, size_t max, struct spool_record *out,
                    size_t *n)
{
    int rc;
    while ((rc = peek_once(s, from, max, out, n)) == 1)
        continue;
    if (rc != 0)
        *n = 0;
    return rc;
}

int spool_peek(struct spool *s, size_t max, struct spool_record *out, size_t *n)
{
    return spool_peek_from(s, 0, max, out, n);
}

int spool_done(struct spool *s, spool_id id)
{
    struct seg *g = find_seg(s, (uint32_t)(id >> 32));
    uint32_t i = (uint32_t)id;
    if (g == NULL || i >= g->nrecs)
        return errno = ENOENT, -1;
    if (g->recs[i].done)
        return 0;
    seg_mark_done(s, g, i); /* done out of order is saved too */
    seg_advance(g);
    spool_schedule_flush(s);
    return 0;
}
