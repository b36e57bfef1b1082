/* spool_files.c — the spool directory's file names and the .done progress
 * files (their format is in spool.h): writing a segment's progress, reading
 * it back at open, and removing a finished segment's files. Loop thread
 * only, except spool_file_name, which the writer thread uses too. */
#include "log.h"
#include "spool_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DONE_MAX_BYTES (1u << 20) /* a longer .done file's marks are ignored */

static const char *const kinds[] = {"spool", "done", "done.tmp", "spool.corrupt"};

/* ---- names ------------------------------------------------------------------ */

void spool_file_name(char name[NAME_LEN], int worker, uint32_t seq, enum kind k)
{
    snprintf(name, NAME_LEN, "w%d-%010" PRIu32 ".%s", worker, seq, kinds[k]);
}

int spool_parse_name(const char *name, struct found *f)
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
        spool_file_name(canonical, (int)w, (uint32_t)seq, (enum kind)k);
        if (strcmp(name, canonical) == 0) { /* no "w01-…": we could not rebuild it */
            *f = (struct found){(int)w, (uint32_t)seq, (enum kind)k};
            return 0;
        }
    }
    return -1;
}

void seg_file(char name[NAME_LEN], const struct seg *g, enum kind k)
{
    spool_file_name(name, g->worker, g->seq, k);
}

/* ---- writing progress ------------------------------------------------------- */

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

void seg_write_done(struct spool *s, struct seg *g)
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

void seg_remove_files(struct spool *s, struct seg *g)
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
            seg_write_done(s, g);
        return;
    }
    seg_file(other, g, K_DONE);
    if (unlinkat(s->dirfd, other, 0) != 0 && errno != ENOENT)
        log_warn("spool: cannot remove %s/%s: %s", s->dir, other, strerror(errno));
}

/* ---- reading progress ------------------------------------------------------- */

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

uint64_t seg_read_done(struct spool *s, const struct seg *g, struct marks *m)
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
