/* spool_recover.c — opening a spool, which is also recovery after a crash:
 * preparing the directory, the workers' flocks (w<i>.lock), adopting the
 * files of workers that no longer exist (worker 0 only), and indexing each
 * segment from its .done offset up to the first torn or corrupt record.
 * Runs on the loop thread inside spool_open, before the writer starts. */
#include "log.h"
#include "spool_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- indexing one segment --------------------------------------------------- */

/* Marks done the records of a freshly scanned g that m marks. */
static void seg_apply_marks(struct spool *s, struct seg *g, const struct marks *m)
{
    uint32_t n = seg_markable(g);
    for (uint32_t k = 0; k < n && k / 8 < m->nbytes; k++)
        if (m->bits[k / 8] >> (k % 8) & 1)
            seg_mark_done(s, g, g->head + k);
    seg_advance(g);
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
        enum spool_rec_state st2 =
            spool_read_record(fd, off, size, s->peekbuf, SPOOL_MAX_RECORD, &len);
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
    spool_file_name(name, worker, seq, K_SPOOL);
    struct seg *g = seg_new(s, worker, seq);
    struct marks m = {NULL, 0};
    if (g)
        g->done_off = seg_read_done(s, g, &m);
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
    TAILQ_INSERT_TAIL(&s->segs, g, link);
}

/* ---- the directory's files and locks ---------------------------------------- */

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
        if (spool_parse_name(e->d_name, &f) != 0 ||
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
    spool_file_name(name, f->worker, f->seq, f->kind);
    int has_spool = i > 0 && v[i - 1].worker == f->worker && v[i - 1].seq == f->seq &&
                    v[i - 1].kind == K_SPOOL;
    if (f->kind == K_SPOOL)
        load_segment(s, f->worker, f->seq);
    else if (f->kind == K_TMP || (f->kind == K_DONE && !has_spool))
        (void)unlinkat(s->dirfd, name, 0); /* best effort: they are harmless */
}

int spool_load(struct spool *s, const char *dir, char *err, size_t errlen)
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
    spool_flush(s); /* segments found with nothing pending go now */
    return 0;
}

/* ---- the directory ---------------------------------------------------------- */

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

int spool_open_dir(struct spool *s, const char *dir, char *err, size_t errlen)
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
