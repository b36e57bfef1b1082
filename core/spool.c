/* spool.c — the spool's API (see spool.h): opening and freeing, appends,
 * their completions on the loop thread, cancellation and stats. The record
 * format, the files, the index, recovery and the writer thread live in the
 * spool_*.c files that spool_internal.h lists. Loop thread only. */
#include "log.h"
#include "spool_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define QUEUE_MAX_BYTES (64u << 20) /* appends past this many queued bytes are refused */

/* ---- completions (loop thread) -------------------------------------------- */

/* Indexes the durable appends of a finished list. */
static void index_finished(struct spool *s, const struct append_list *all)
{
    const struct append *a;
    STAILQ_FOREACH(a, all, link) {
        if (a->err == 0)
            spool_index_durable(s, a);
        else
            s->active = NULL; /* the writer has left its segment */
    }
}

/* Calls the callbacks owed for a list of appends and frees them; with
 * forced_err their results are ignored (they were never written). */
static void deliver(struct spool *s, struct append_list *all, const char *forced_err)
{
    struct append *a;
    if (forced_err == NULL)
        index_finished(s, all);
    if (!STAILQ_EMPTY(all))
        spool_schedule_flush(s); /* a segment left behind may be finished */
    char buf[128];
    while ((a = STAILQ_FIRST(all)) != NULL) {
        STAILQ_REMOVE_HEAD(all, link);
        LIST_REMOVE(a, out_link);
        if (a->cb) {
            const char *err = forced_err ? forced_err
                              : a->err     ? strerror_r(a->err, buf, sizeof buf)
                                           : NULL;
            a->cb(a->arg, err);
        }
        free(a);
    }
}

static void deliver_finished(struct spool *s)
{
    struct append_list all = STAILQ_HEAD_INITIALIZER(all);
    pthread_mutex_lock(&s->lock);
    STAILQ_CONCAT(&all, &s->finished);
    s->fsyncs = s->sh_fsyncs;
    s->failed = s->sh_failed;
    uint64_t undo_failed = s->sh_undo_failed;
    pthread_mutex_unlock(&s->lock);
    if (undo_failed != s->undo_failed) {
        s->undo_failed = undo_failed;
        log_error("spool: cannot remove the bytes of a failed batch; its records may be "
                  "handed out after a restart");
    }
    deliver(s, &all, NULL);
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
    TAILQ_INIT(&s->segs);
    LIST_INIT(&s->outstanding);
    STAILQ_INIT(&s->queue);
    STAILQ_INIT(&s->finished);
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
    s->flush_ev = event_new(base, -1, 0, spool_on_flush, s);
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
    if (spool_open_dir(s, dir, err, errlen) != 0 || spool_load(s, dir, err, errlen) != 0)
        goto fail;
    if (pthread_create(&s->thread, NULL, spool_writer_main, s) != 0) {
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
        STAILQ_INSERT_TAIL(&s->queue, a, link);
        s->qbytes += HEADER_BYTES + len;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    if (full) {
        free(a);
        return errno = EAGAIN, -1;
    }
    LIST_INSERT_HEAD(&s->outstanding, a, out_link); /* the writer never touches out_link */
    return 0;
}

void spool_cancel(struct spool *s, void *arg)
{
    struct append *a;
    LIST_FOREACH(a, &s->outstanding, out_link)
        if (a->arg == arg)
            a->cb = NULL;
}

size_t spool_pending(const struct spool *s)
{
    return s->pending;
}

void spool_stats(const struct spool *s, struct spool_stats *out)
{
    size_t files = 0;
    const struct seg *g;
    TAILQ_FOREACH(g, &s->segs, link)
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
    struct append_list queued = STAILQ_HEAD_INITIALIZER(queued);
    pthread_mutex_lock(&s->lock);
    STAILQ_CONCAT(&queued, &s->queue);
    s->qbytes = 0;
    pthread_mutex_unlock(&s->lock);
    deliver(s, &queued, "stopping");
    spool_writer_close(s);
}

void spool_free(struct spool *s)
{
    if (s == NULL)
        return;
    stop_writer(s);
    s->active = NULL; /* nothing is appended any more: finished segments can go */
    if (s->dirfd >= 0)
        spool_flush(s);
    struct seg *g;
    while ((g = TAILQ_FIRST(&s->segs)) != NULL) {
        TAILQ_REMOVE(&s->segs, g, link);
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
