/* spool.c — durable append-only spool with group commit (see spool.h).
 *
 * Three owners share struct spool:
 *   - the loop thread owns the index (segments and their records), the
 *     outstanding-append list, the callbacks and the .done files;
 *   - the writer thread owns the segment being appended to (wfd, wseq, wsize,
 *     next_seq, wbuf);
 *   - the mutex guards the queue, the finished list and the flags between them.
 * An append travels queue -> writer's batch -> finished list -> loop, linked
 * by `next`; the loop also keeps it on the outstanding list (for cancel)
 * until its callback is due. */
#include "spool.h"
#include "log.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_BYTES 12u
#define BATCH_MAX_BYTES (16u << 20) /* the writer takes at most this much (at least one record) */
#define QUEUE_MAX_BYTES (64u << 20) /* appends past this many queued bytes are refused */
#define PEEK_MAX_BYTES (16u << 20)
#define DONE_MAX_BYTES (1u << 20) /* a longer .done file's marks are ignored */
#define NO_HOLE UINT64_MAX
#define NAME_LEN 64

static const unsigned char MAGIC[4] = {'S', 'T', 'P', 'L'};

struct append {
    struct append *next;                /* queue, batch or finished list */
    struct append *prev_out, *next_out; /* outstanding list (loop thread) */
    spool_cb cb;                        /* loop thread; NULL once cancelled */
    void *arg;
    uint32_t seq; /* set by the writer: the segment written to */
    int err;      /* set by the writer: 0 durable, else an errno */
    uint64_t off; /* set by the writer: where the frame starts */
    uint32_t len; /* payload bytes */
    unsigned char data[];
};

struct rec {
    uint64_t off; /* of the frame */
    uint32_t len; /* of the payload */
    uint32_t done;
};

/* A segment file in the index (loop thread). */
struct seg {
    struct seg *next;
    int worker;
    uint32_t seq;
    uint32_t num;      /* the high half of its records' ids */
    int fd;            /* for reading; -1 until first peeked */
    uint64_t done_off; /* every record below is done */
    uint64_t end;      /* end of the last record indexed */
    uint64_t hole;     /* a durable record that could not be indexed starts here */
    uint64_t skipped;  /* corrupt or torn bytes cut off */
    int dirty;         /* done_off not yet in the .done file */
    struct rec *recs;
    uint32_t nrecs, cap;
    uint32_t head; /* recs[0..head) are done and below done_off */
    size_t npending;
};

struct lockfile {
    int worker;
    int fd;
};

struct spool {
    struct event_base *base;
    char *dir; /* for messages */
    int worker, nworkers;
    int dirfd, efd;
    struct event *wake_ev, *flush_ev;
    struct lockfile *locks;
    int nlocks;
    pthread_t thread;
    int started;

    /* loop thread */
    struct seg *segs, *tail;
    struct seg *active; /* the writer's current segment as last reported */
    uint32_t next_num;
    size_t pending;
    uint64_t pending_bytes, skipped_bytes, fsyncs, failed, undo_failed;
    struct append *outstanding;
    int stopping;
    unsigned char *peekbuf;
    size_t peekcap;

    /* shared, under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct append *qhead, *qtail, *fhead, *ftail;
    size_t qbytes;
    int stop, rotate, fault_where, fault_err;
    uint64_t sh_fsyncs, sh_failed, sh_undo_failed;

    /* writer thread (the loop's once it has been joined) */
    int wfd;
    uint32_t wseq, next_seq;
    uint64_t wsize;
    unsigned char *wbuf;
    size_t wcap;
};

/* ---- CRC-32C, little-endian fields, names -------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t spool_crc32c(const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* "w<worker>-<seq, 10 digits>.<ext>" */
static void file_name(char name[NAME_LEN], int worker, uint32_t seq, const char *ext)
{
    snprintf(name, NAME_LEN, "w%d-%010" PRIu32 ".%s", worker, seq, ext);
}

static const char *const kinds[] = {"spool", "done", "done.tmp", "spool.corrupt"};
enum kind { K_SPOOL, K_DONE, K_TMP, K_CORRUPT, K_NONE };

struct found {
    int worker;
    uint32_t seq;
    enum kind kind;
};

/* Parses a file name of ours into f; returns 0, or -1 for other names. */
static int parse_name(const char *name, struct found *f)
{
    if (name[0] != 'w' || !isdigit((unsigned char)name[1]))
        return -1;
    char *end;
    errno = 0;
    long w = strtol(name + 1, &end, 10);
    if (errno || w > INT_MAX || *end != '-')
        return -1;
    const char *d = end + 1;
    for (int i = 0; i < 10; i++)
        if (!isdigit((unsigned char)d[i]))
            return -1;
    unsigned long long seq = strtoull(d, NULL, 10);
    if (d[10] != '.' || seq > UINT32_MAX)
        return -1;
    char canonical[NAME_LEN];
    for (int k = 0; k < K_NONE; k++) {
        file_name(canonical, (int)w, (uint32_t)seq, kinds[k]);
        if (strcmp(name, canonical) == 0) { /* no "w01-…": we could not rebuild it */
            *f = (struct found){(int)w, (uint32_t)seq, (enum kind)k};
            return 0;
        }
    }
    return -1;
}

static void seg_file(char name[NAME_LEN], const struct seg *g, enum kind k)
{
    file_name(name, g->worker, g->seq, kinds[k]);
}

/* 0: all n bytes read; 1: the file ended first; -1: error (errno). */
static int pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -1 : 1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* ---- reading records ------------------------------------------------------ */

enum rec_state { REC_OK, REC_TORN, REC_CORRUPT, REC_IO };

static const char *const rec_state_text[] = {"ok", "torn record", "corrupt record",
                                             "read error"};

/* Reads and checks the record at off of a file whose valid part ends at
 * `size`: its payload goes to buf (room for cap bytes), its length to *len.
 * A length over cap counts as corrupt. */
static enum rec_state read_record(int fd, uint64_t off, uint64_t size, unsigned char *buf,
                                  size_t cap, uint32_t *len)
{
    unsigned char h[HEADER_BYTES];
    if (size - off < HEADER_BYTES)
        return REC_TORN;
    int rc = pread_all(fd, h, sizeof h, off);
    if (rc != 0)
        return rc < 0 ? REC_IO : REC_TORN;
    *len = get_le32(h + 4);
    if (memcmp(h, MAGIC, sizeof MAGIC) != 0 || *len > cap)
        return REC_CORRUPT;
    if (size - off - HEADER_BYTES < *len)
        return REC_TORN;
    rc = pread_all(fd, buf, *len, off + HEADER_BYTES);
    if (rc != 0)
        return rc < 0 ? REC_IO : REC_TORN;
    return spool_crc32c(buf, *len) == get_le32(h + 8) ? REC_OK : REC_CORRUPT;
}

/* ---- the index (loop thread) --------------------------------------------- */

static spool_id make_id(const struct seg *g, uint32_t i)
{
    return (spool_id)g->num << 32 | i;
}

static struct seg *seg_new(struct spool *s, int worker, uint32_t seq)
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

static void seg_free(struct seg *g)
{
    if (g->fd >= 0)
        close(g->fd);
    free(g->recs);
    free(g);
}

static void seg_link(struct spool *s, struct seg *g)
{
    if (s->tail)
        s->tail->next = g;
    else
        s->segs = g;
    s->tail = g;
}

/* Adds a pending record at off to g's index. Returns 0, or -1 (no memory). */
static int seg_add(struct spool *s, struct seg *g, uint64_t off, uint32_t len)
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

/* Marks recs[i] done (once). */
static void rec_mark_done(struct spool *s, struct seg *g, uint32_t i)
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

/* Moves done_off over the done records that follow it. */
static void seg_advance(struct seg *g)
{
    while (g->head < g->nrecs && g->recs[g->head].done && g->recs[g->head].off == g->done_off) {
        g->done_off += HEADER_BYTES + g->recs[g->head].len;
        g->head++;
        g->dirty = 1;
    }
}

static struct seg *find_seg(const struct spool *s, uint32_t num)
{
    for (struct seg *g = s->segs; g; g = g->next)
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
static uint32_t seg_markable(const struct seg *g)
{
    uint64_t off = g->done_off;
    uint32_t i = g->head;
    while (i < g->nrecs && g->recs[i].off == off) {
        off += HEADER_BYTES + g->recs[i].len;
        i++;
    }
    return i - g->head;
}

/* g's progress as the .done file's text, in a new buffer (the caller frees
 * it): "<done_off>\n", then the bitmap line when a record past done_off is
 * done. Returns its length, or 0 (nothing allocated) without memory. */
static size_t format_done(const struct seg *g, char **out)
{
    static const char hex[] = "0123456789abcdef";
    uint32_t n = seg_markable(g), last = 0; /* bits [0, last) hold every mark */
    for (uint32_t k = 0; k < n; k++)
        if (g->recs[g->head + k].done)
            last = k + 1;
    size_t nbytes = (last + 7) / 8, cap = 24 + 2 * nbytes + 1;
    char *text = malloc(cap);
    if (text == NULL)
        return 0;
    size_t len = (size_t)snprintf(text, cap, "%" PRIu64 "\n", g->done_off);
    for (size_t b = 0; b < nbytes; b++) {
        unsigned v = 0;
        for (uint32_t bit = 0; bit < 8; bit++) {
            uint32_t k = (uint32_t)b * 8 + bit;
            if (k < last && g->recs[g->head + k].done)
                v |= 1u << bit;
        }
        text[len++] = hex[v >> 4];
        text[len++] = hex[v & 15];
    }
    if (nbytes > 0)
        text[len++] = '\n';
    *out = text;
    return len;
}

/* 0: all n bytes written; -1: error (errno). */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void write_done_file(struct spool *s, struct seg *g)
{
    char name[NAME_LEN], tmp[NAME_LEN], small[24];
    seg_file(name, g, K_DONE);
    seg_file(tmp, g, K_TMP);
    char *text;
    size_t n = format_done(g, &text);
    if (n == 0) { /* no memory: the offset alone; the marked records may be replayed */
        n = (size_t)snprintf(small, sizeof small, "%" PRIu64 "\n", g->done_off);
        text = NULL;
    }
    int fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write_all(fd, text ? text : small, n) == 0;
    int e = errno;
    free(text);
    errno = e;
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (ok && renameat(s->dirfd, tmp, s->dirfd, name) == 0) {
        g->dirty = 0;
        return;
    }
    log_warn("spool: cannot save progress in %s/%s: %s (its records may be replayed)", s->dir, name,
             strerror(errno));
}

/* Removes a finished segment's files; one with cut-off bytes is kept as
 * .spool.corrupt for inspection. */
static void seg_remove_files(struct spool *s, struct seg *g)
{
    char name[NAME_LEN], other[NAME_LEN];
    seg_file(name, g, K_SPOOL);
    int rc;
    if (g->skipped) {
        seg_file(other, g, K_CORRUPT);
        rc = renameat(s->dirfd, name, s->dirfd, other);
        if (rc == 0)
            log_warn("spool: %s/%s kept as %s (%" PRIu64 " bytes could not be read)", s->dir, name, other,
                     g->skipped);
    } else {
        rc = unlinkat(s->dirfd, name, 0);
    }
    if (rc != 0 && errno != ENOENT) {
        log_warn("spool: cannot remove %s/%s: %s", s->dir, name, strerror(errno));
        if (g->dirty)
            write_done_file(s, g);
        return;
    }
    seg_file(other, g, K_DONE);
    if (unlinkat(s->dirfd, other, 0) != 0 && errno != ENOENT)
        log_warn("spool: cannot remove %s/%s: %s", s->dir, other, strerror(errno));
}

/* Saves progress and deletes finished segments. */
static void flush(struct spool *s)
{
    struct seg **pp = &s->segs;
    s->tail = NULL;
    while (*pp) {
        struct seg *g = *pp;
        if (seg_deletable(s, g)) {
            seg_remove_files(s, g);
            *pp = g->next;
            seg_free(g);
            continue;
        }
        if (g->dirty)
            write_done_file(s, g);
        s->tail = g;
        pp = &g->next;
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    flush(arg);
}

static void schedule_flush(struct spool *s)
{
    event_active(s->flush_ev, EV_TIMEOUT, 1); /* no-op when already active */
}

/* ---- opening -------------------------------------------------------------- */

/* The records a .done file marks done past its offset. */
struct marks {
    unsigned char *bits; /* bit k: byte k / 8, value 1 << k % 8; NULL if none */
    size_t nbytes;
};

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Parses the bitmap line p[0 .. n) (hex pairs and a newline; empty: no
 * marks). Returns 0, or -1 when it is malformed or there is no memory. */
static int parse_marks(const char *p, size_t n, struct marks *m)
{
    if (n == 0)
        return 0;
    if (n < 3 || p[n - 1] != '\n' || (n - 1) % 2 != 0)
        return -1;
    size_t nbytes = (n - 1) / 2;
    unsigned char *bits = malloc(nbytes);
    if (bits == NULL)
        return -1;
    for (size_t i = 0; i < nbytes; i++) {
        int hi = hex_digit(p[2 * i]), lo = hex_digit(p[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(bits);
            return -1;
        }
        bits[i] = (unsigned char)(hi << 4 | lo);
    }
    m->bits = bits;
    m->nbytes = nbytes;
    return 0;
}

/* Reads up to DONE_MAX_BYTES of a file into a new NUL-terminated buffer
 * (the caller frees it); *len gets the bytes read. Returns NULL with errno
 * on failure. */
static char *read_small_file(int fd, size_t *len)
{
    char *buf = malloc(DONE_MAX_BYTES + 1);
    if (buf == NULL)
        return NULL;
    size_t n = 0;
    while (n < DONE_MAX_BYTES) {
        ssize_t r = read(fd, buf + n, DONE_MAX_BYTES - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            errno = e;
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* g's .done file: returns the offset below which every record is done (0
 * when there is no file or it is malformed) and fills m with the marks past
 * it (none when their line is malformed: those records are replayed). */
static uint64_t read_done_file(struct spool *s, const struct seg *g, struct marks *m)
{
    char name[NAME_LEN];
    seg_file(name, g, K_DONE);
    *m = (struct marks){NULL, 0};
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            log_warn("spool: cannot read %s/%s: %s", s->dir, name, strerror(errno));
        return 0;
    }
    size_t len = 0;
    char *buf = read_small_file(fd, &len);
    close(fd);
    if (buf == NULL) {
        log_warn("spool: cannot read %s/%s: %s; replaying its segment from the start", s->dir, name,
                 strerror(errno));
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (!isdigit((unsigned char)buf[0]) || *end != '\n' || errno) {
        log_warn("spool: %s/%s is malformed; replaying its segment from the start", s->dir, name);
        free(buf);
        return 0;
    }
    end++;
    if (parse_marks(end, len - (size_t)(end - buf), m) != 0)
        log_warn("spool: %s/%s: the records marked done past offset %llu cannot be read; they are "
                 "replayed", s->dir, name, v);
    free(buf);
    return v;
}

/* Marks done the records of a freshly scanned g that m marks. */
static void seg_apply_marks(struct spool *s, struct seg *g, const struct marks *m)
{
    uint32_t n = seg_markable(g);
    for (uint32_t k = 0; k < n && k / 8 < m->nbytes; k++)
        if (m->bits[k / 8] >> (k % 8) & 1)
            rec_mark_done(s, g, g->head + k);
    seg_advance(g);
}

/* Cuts g's valid part at off, where a bad record starts in a file of `size`
 * bytes: counts and logs the skipped bytes. */
static void seg_cut_at(struct spool *s, struct seg *g, uint64_t off, uint64_t size,
                       enum rec_state why)
{
    char name[NAME_LEN];
    seg_file(name, g, K_SPOOL);
    g->skipped += size - off;
    s->skipped_bytes += size - off;
    log_warn("spool: %s/%s: %s at offset %" PRIu64 "; %" PRIu64 " bytes from there are skipped",
             s->dir, name, rec_state_text[why], off, size - off);
}

/* Indexes g's records from its done offset. Returns 0, or -1 with errno. */
static int seg_scan(struct spool *s, struct seg *g, int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    uint64_t size = (uint64_t)st.st_size, off = g->done_off;
    if (off > size) { /* truncated by hand after being applied */
        g->done_off = g->end = size;
        return 0;
    }
    g->end = off;
    while (off < size) {
        uint32_t len;
        enum rec_state st2 = read_record(fd, off, size, s->peekbuf, SPOOL_MAX_RECORD, &len);
        if (st2 == REC_IO)
            return -1;
        if (st2 != REC_OK) {
            seg_cut_at(s, g, off, size, st2);
            return 0;
        }
        if (seg_add(s, g, off, len) != 0) {
            errno = ENOMEM;
            return -1;
        }
        off = g->end;
    }
    return 0;
}

/* Indexes one segment file; deletes it when nothing in it is pending; leaves
 * it alone (logged) when it cannot be read. */
static void load_segment(struct spool *s, int worker, uint32_t seq)
{
    char name[NAME_LEN];
    file_name(name, worker, seq, kinds[K_SPOOL]);
    struct seg *g = seg_new(s, worker, seq);
    struct marks m = {NULL, 0};
    if (g)
        g->done_off = read_done_file(s, g, &m);
    int fd = g ? openat(s->dirfd, name, O_RDONLY | O_CLOEXEC) : -1;
    if (g == NULL || fd < 0 || seg_scan(s, g, fd) != 0) {
        free(m.bits);
        log_error("spool: cannot read %s/%s: %s (left in place)", s->dir, name,
                  strerror(g ? errno : ENOMEM));
        if (g) {
            s->pending -= g->npending;
            for (uint32_t i = 0; i < g->nrecs; i++)
                s->pending_bytes -= g->recs[i].len;
            seg_free(g);
        }
        if (fd >= 0)
            close(fd);
        return;
    }
    close(fd);
    seg_apply_marks(s, g, &m);
    free(m.bits);
    seg_link(s, g);
}

static int cmp_found(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    if (x->worker != y->worker)
        return x->worker < y->worker ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return (int)x->kind - (int)y->kind;
}

/* Lists this worker's files (and for worker 0 the orphans') into *out,
 * sorted by worker, seq and kind. Returns the count, or -1 with errno. */
static ssize_t list_files(struct spool *s, const char *dir, struct found **out)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    size_t n = 0, cap = 0;
    struct found *v = NULL, f;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (parse_name(e->d_name, &f) != 0 ||
            !(f.worker == s->worker || (s->worker == 0 && f.worker >= s->nworkers)))
            continue;
        if (n == cap) {
            struct found *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
            if (nv == NULL) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = nv;
        }
        v[n++] = f;
    }
    closedir(d);
    if (n)
        qsort(v, n, sizeof *v, cmp_found);
    *out = v;
    return (ssize_t)n;
}

/* Takes the flock of worker j's files. Returns 0, 1 when another process
 * holds it, or -1 with errno. */
static int take_lock(struct spool *s, int j)
{
    char name[NAME_LEN];
    snprintf(name, sizeof name, "w%d.lock", j);
    struct lockfile *l = realloc(s->locks, ((size_t)s->nlocks + 1) * sizeof *l);
    if (l == NULL)
        return errno = ENOMEM, -1;
    s->locks = l;
    int fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return e == EWOULDBLOCK ? 1 : -1;
    }
    l[s->nlocks++] = (struct lockfile){j, fd};
    return 0;
}

static int holds_lock(const struct spool *s, int j)
{
    for (int i = 0; i < s->nlocks; i++)
        if (s->locks[i].worker == j)
            return 1;
    return 0;
}

/* Locks the orphans' worker indices found in v; skipped ones are logged. */
static void lock_orphans(struct spool *s, const struct found *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int j = v[i].worker;
        if (j == s->worker || holds_lock(s, j) || (i > 0 && v[i - 1].worker == j))
            continue;
        int rc = take_lock(s, j);
        if (rc != 0)
            log_warn("spool: not adopting worker %d's files: %s", j,
                     rc > 0 ? "another process holds them" : strerror(errno));
    }
}

/* Handles one listed file: indexes segments, drops stale .done and temp
 * files, and keeps next_seq past every own name. */
static void load_found(struct spool *s, const struct found *v, size_t i)
{
    const struct found *f = &v[i];
    if (f->worker == s->worker && f->seq >= s->next_seq)
        s->next_seq = f->seq + 1;
    if (!holds_lock(s, f->worker))
        return;
    char name[NAME_LEN];
    file_name(name, f->worker, f->seq, kinds[f->kind]);
    int has_spool = i > 0 && v[i - 1].worker == f->worker && v[i - 1].seq == f->seq &&
                    v[i - 1].kind == K_SPOOL;
    if (f->kind == K_SPOOL)
        load_segment(s, f->worker, f->seq);
    else if (f->kind == K_TMP || (f->kind == K_DONE && !has_spool))
        (void)unlinkat(s->dirfd, name, 0); /* best effort: they are harmless */
}

static int load(struct spool *s, const char *dir, char *err, size_t errlen)
{
    struct found *v = NULL;
    ssize_t n = list_files(s, dir, &v);
    if (n < 0) {
        snprintf(err, errlen, "cannot list %s: %s", dir, strerror(errno));
        return -1;
    }
    lock_orphans(s, v, (size_t)n);
    s->peekbuf = n > 0 ? malloc(SPOOL_MAX_RECORD) : NULL;
    if (n > 0 && s->peekbuf == NULL) {
        free(v);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->peekcap = n > 0 ? SPOOL_MAX_RECORD : 0;
    for (size_t i = 0; i < (size_t)n; i++)
        load_found(s, v, i);
    free(v);
    flush(s); /* segments found with nothing pending go now */
    return 0;
}

/* mkdir() that accepts a directory already there. */
static int make_dir(const char *path, mode_t mode, char *err, size_t errlen)
{
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return 0;
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

int spool_prepare_dir(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--; /* "var/spool/" is var/spool itself, not a parent of it */
    if (n == 0 || n >= sizeof path) {
        snprintf(err, errlen, "the spool directory's path is empty or too long");
        return -1;
    }
    memcpy(path, dir, n);
    path[n] = '\0';
    for (char *p = path + 1; *p; p++) { /* the parents, as mkdir -p makes them */
        if (*p != '/' || p[-1] == '/')
            continue;
        *p = '\0';
        int rc = make_dir(path, 0755, err, errlen);
        *p = '/';
        if (rc != 0)
            return -1;
    }
    struct stat st;
    if (make_dir(path, 0700, err, errlen) != 0)
        return -1;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "cannot use %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory", path);
        return -1;
    }
    if (access(path, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "cannot write to %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int open_dir(struct spool *s, const char *dir, char *err, size_t errlen)
{
    if (spool_prepare_dir(dir, err, errlen) != 0)
        return -1;
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = take_lock(s, s->worker);
    if (rc != 0) {
        snprintf(err, errlen, "%s: worker %d's files %s", dir, s->worker,
                 rc > 0 ? "are in use by another process" : strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- the writer thread ---------------------------------------------------- */

static void writer_close(struct spool *s)
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
    writer_close(s);
    char name[NAME_LEN];
    for (int tries = 0; tries < 100; tries++) {
        uint32_t seq = s->next_seq++;
        file_name(name, s->worker, seq, kinds[K_SPOOL]);
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
static size_t frame_batch(struct spool *s, struct append *batch)
{
    size_t total = 0;
    for (struct append *a = batch; a; a = a->next)
        total += HEADER_BYTES + a->len;
    if (total > s->wcap) {
        unsigned char *b = realloc(s->wbuf, total);
        if (b == NULL)
            return 0;
        s->wbuf = b;
        s->wcap = total;
    }
    size_t pos = 0;
    for (struct append *a = batch; a; a = a->next) {
        unsigned char *p = s->wbuf + pos;
        memcpy(p, MAGIC, sizeof MAGIC);
        put_le32(p + 4, a->len);
        put_le32(p + 8, spool_crc32c(a->data, a->len));
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
    file_name(name, s->worker, s->wseq, kinds[K_SPOOL]);
    int ok = start == 0 ? unlinkat(s->dirfd, name, 0) == 0
                        : ftruncate(s->wfd, (off_t)start) == 0 && fdatasync(s->wfd) == 0;
    writer_close(s);
    if (!ok) {
        pthread_mutex_lock(&s->lock);
        s->sh_undo_failed++;
        pthread_mutex_unlock(&s->lock);
    }
}

/* Writes and syncs one batch; stamps every append with seq, offset and the
 * result. Returns 1 when fdatasync was called, else 0. */
static int commit(struct spool *s, struct append *batch, int fault_where, int fault_err)
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
    for (struct append *a = batch; a; a = a->next) {
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

/* Takes up to BATCH_MAX_BYTES (at least one append) off the queue; under lock. */
static struct append *take_batch(struct spool *s)
{
    struct append *batch = s->qhead, *last = batch;
    size_t bytes = HEADER_BYTES + last->len;
    while (last->next && bytes + HEADER_BYTES + last->next->len <= BATCH_MAX_BYTES) {
        last = last->next;
        bytes += HEADER_BYTES + last->len;
    }
    s->qhead = last->next;
    if (s->qhead == NULL)
        s->qtail = NULL;
    last->next = NULL;
    s->qbytes -= bytes;
    return batch;
}

/* Hands a committed batch to the loop; under lock. */
static void finish(struct spool *s, struct append *batch)
{
    if (s->ftail)
        s->ftail->next = batch;
    else
        s->fhead = batch;
    struct append *a = batch;
    while (a->next)
        a = a->next;
    s->ftail = a;
    uint64_t one = 1;
    if (write(s->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        abort(); /* only delays delivery; cannot fail in practice */
}

static void *writer_main(void *arg)
{
    struct spool *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stop && s->qhead == NULL)
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->stop)
            break;
        struct append *batch = take_batch(s);
        int rotate = s->rotate, where = s->fault_where, ferr = s->fault_err;
        s->rotate = s->fault_where = 0;
        pthread_mutex_unlock(&s->lock);
        if (rotate)
            writer_close(s);
        int synced = commit(s, batch, where, ferr);
        pthread_mutex_lock(&s->lock);
        s->sh_fsyncs += (uint64_t)synced;
        s->sh_failed += batch->err != 0;
        finish(s, batch);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- completions (loop thread) -------------------------------------------- */

static void unlink_outstanding(struct spool *s, struct append *a)
{
    if (a->prev_out)
        a->prev_out->next_out = a->next_out;
    else
        s->outstanding = a->next_out;
    if (a->next_out)
        a->next_out->prev_out = a->prev_out;
}

/* The index entry of the writer's segment `seq`, created at the tail when new. */
static struct seg *own_seg(struct spool *s, uint32_t seq)
{
    if (s->tail && s->tail->worker == s->worker && s->tail->seq == seq)
        return s->tail;
    struct seg *g = seg_new(s, s->worker, seq);
    if (g)
        seg_link(s, g);
    return g;
}

/* Indexes a durable append. A record that cannot be indexed (no memory)
 * leaves a hole: progress stops before it, so a restart replays it. */
static void index_durable(struct spool *s, struct append *a)
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

/* Calls the callbacks owed for a list of appends and frees them; with
 * forced_err their results are ignored (they were never written). */
static void deliver(struct spool *s, struct append *all, const char *forced_err)
{
    for (struct append *a = forced_err ? NULL : all; a; a = a->next) {
        if (a->err == 0)
            index_durable(s, a);
        else
            s->active = NULL; /* the writer has left its segment */
    }
    if (all)
        schedule_flush(s); /* a segment left behind may be finished */
    char buf[128];
    while (all) {
        struct append *next = all->next;
        unlink_outstanding(s, all);
        if (all->cb) {
            const char *err = forced_err ? forced_err
                              : all->err   ? strerror_r(all->err, buf, sizeof buf)
                                           : NULL;
            all->cb(all->arg, err);
        }
        free(all);
        all = next;
    }
}

static void deliver_finished(struct spool *s)
{
    pthread_mutex_lock(&s->lock);
    struct append *all = s->fhead;
    s->fhead = s->ftail = NULL;
    s->fsyncs = s->sh_fsyncs;
    s->failed = s->sh_failed;
    uint64_t undo_failed = s->sh_undo_failed;
    pthread_mutex_unlock(&s->lock);
    if (undo_failed != s->undo_failed) {
        s->undo_failed = undo_failed;
        log_error("spool: cannot remove the bytes of a failed batch; its records may be "
                  "handed out after a restart");
    }
    deliver(s, all, NULL);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        abort();
    deliver_finished(arg);
}

/* ---- the API -------------------------------------------------------------- */

static struct spool *spool_new(struct event_base *base, int worker, int nworkers)
{
    struct spool *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->base = base;
    s->worker = worker;
    s->nworkers = nworkers;
    s->dirfd = s->wfd = -1;
    s->next_seq = 1;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0 || pthread_mutex_init(&s->lock, NULL) != 0) {
        if (s->efd >= 0)
            close(s->efd);
        free(s);
        return NULL;
    }
    pthread_cond_init(&s->wake, NULL);
    s->wake_ev = event_new(base, s->efd, EV_READ | EV_PERSIST, on_wake, s);
    s->flush_ev = event_new(base, -1, 0, on_flush, s);
    if (s->wake_ev == NULL || s->flush_ev == NULL || event_add(s->wake_ev, NULL) != 0) {
        spool_free(s);
        return NULL;
    }
    return s;
}

struct spool *spool_open(struct event_base *base, const char *dir, int worker, int nworkers,
                         char *err, size_t errlen)
{
    if (worker < 0 || nworkers < 1) {
        snprintf(err, errlen, "bad worker index");
        return NULL;
    }
    struct spool *s = spool_new(base, worker, nworkers);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if ((s->dir = strdup(dir)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (open_dir(s, dir, err, errlen) != 0 || load(s, dir, err, errlen) != 0)
        goto fail;
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the spool writer thread");
        goto fail;
    }
    s->started = 1;
    return s;
fail:
    spool_free(s);
    return NULL;
}

int spool_append(struct spool *s, const void *data, size_t len, spool_cb cb, void *arg)
{
    if (s->stopping || len > SPOOL_MAX_RECORD) {
        errno = s->stopping ? ESHUTDOWN : EMSGSIZE;
        return -1;
    }
    struct append *a = malloc(sizeof *a + len);
    if (a == NULL)
        return errno = ENOMEM, -1;
    *a = (struct append){.cb = cb, .arg = arg, .len = (uint32_t)len};
    if (len)
        memcpy(a->data, data, len);
    pthread_mutex_lock(&s->lock);
    int full = s->qbytes + HEADER_BYTES + len > QUEUE_MAX_BYTES;
    if (!full) {
        if (s->qtail)
            s->qtail->next = a;
        else
            s->qhead = a;
        s->qtail = a;
        s->qbytes += HEADER_BYTES + len;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    if (full) {
        free(a);
        return errno = EAGAIN, -1;
    }
    a->next_out = s->outstanding; /* the writer never touches these fields */
    if (s->outstanding)
        s->outstanding->prev_out = a;
    s->outstanding = a;
    return 0;
}

void spool_cancel(struct spool *s, void *arg)
{
    for (struct append *a = s->outstanding; a; a = a->next_out)
        if (a->arg == arg)
            a->cb = NULL;
}

size_t spool_pending(const struct spool *s)
{
    return s->pending;
}

/* Picks the records to peek, from id `from` on, into out (data still NULL).
 * Segments are listed in the order of their numbers, the high half of ids. */
static size_t peek_pick(const struct spool *s, spool_id from, size_t max,
                        struct spool_record *out, size_t *bytes)
{
    uint32_t from_num = (uint32_t)(from >> 32), from_i = (uint32_t)from;
    size_t n = 0;
    *bytes = 0;
    for (const struct seg *g = s->segs; g && n < max; g = g->next) {
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

/* Drops g's records from index i on: the record there went bad. */
static void seg_cut_index(struct spool *s, struct seg *g, uint32_t i, enum rec_state why)
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
    enum rec_state st = read_record(g->fd, r->off, g->end, dst, r->len, &len);
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
    rec_mark_done(s, g, i); /* done out of order is saved too */
    seg_advance(g);
    schedule_flush(s);
    return 0;
}

void spool_stats(const struct spool *s, struct spool_stats *out)
{
    size_t files = 0;
    for (const struct seg *g = s->segs; g; g = g->next)
        files++;
    *out = (struct spool_stats){files,     s->pending,    s->pending_bytes, s->skipped_bytes,
                                s->fsyncs, s->failed};
}

void spool_set_fault(struct spool *s, enum spool_fault where, int errno_value)
{
    pthread_mutex_lock(&s->lock);
    s->fault_where = (int)where;
    s->fault_err = errno_value;
    pthread_mutex_unlock(&s->lock);
}

/* Stops the writer and calls every callback still owed. */
static void stop_writer(struct spool *s)
{
    s->stopping = 1;
    if (s->started) {
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
        s->started = 0;
    }
    deliver_finished(s);
    pthread_mutex_lock(&s->lock);
    struct append *queued = s->qhead;
    s->qhead = s->qtail = NULL;
    s->qbytes = 0;
    pthread_mutex_unlock(&s->lock);
    deliver(s, queued, "stopping");
    writer_close(s);
}

void spool_free(struct spool *s)
{
    if (s == NULL)
        return;
    stop_writer(s);
    s->active = NULL; /* nothing is appended any more: finished segments can go */
    if (s->dirfd >= 0)
        flush(s);
    while (s->segs) {
        struct seg *g = s->segs;
        s->segs = g->next;
        seg_free(g);
    }
    for (int i = 0; i < s->nlocks; i++)
        close(s->locks[i].fd); /* releases the flock */
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->flush_ev)
        event_free(s->flush_ev);
    if (s->dirfd >= 0)
        close(s->dirfd);
    close(s->efd);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s->dir);
    free(s->locks);
    free(s->peekbuf);
    free(s->wbuf);
    free(s);
}
