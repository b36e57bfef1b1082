/* spool_internal.h — what the spool's files share: struct spool and the
 * functions they call in each other. Not for use outside core/spool*.c.
 *
 * The files, each by the owner it serves (spool.h describes the format):
 *   spool_record.c   the record format: framing, CRC-32C, reading one back;
 *   spool_files.c    the directory's file names and the .done progress files;
 *   spool_index.c    the loop thread's index of segments and records: pending
 *                    counts, done marks, peeking, saving progress, deleting
 *                    finished segments;
 *   spool_recover.c  opening: the directory, the workers' locks, adopting
 *                    orphans, scanning segments up to the first bad record;
 *   spool_writer.c   the writer thread: group commit into the segment being
 *                    appended to;
 *   spool.c          the API: open and free, appends, their completions on the
 *                    loop thread, cancellation, stats.
 *
 * Three owners share struct spool:
 *   - the loop thread owns the index (segments and their records), the
 *     outstanding-append list, the callbacks and the .done files;
 *   - the writer thread owns the segment being appended to (wfd, wseq, wsize,
 *     next_seq, wbuf);
 *   - the mutex guards the queue, the finished list and the flags between them.
 * An append travels queue -> writer's batch -> finished list -> loop, linked
 * by `link`; the loop also keeps it on the outstanding list (for cancel)
 * until its callback is due. */
#ifndef STEEPLE_SPOOL_INTERNAL_H
#define STEEPLE_SPOOL_INTERNAL_H

#include "spool.h"
#include "spool_record.h"

#include <event2/util.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct event;
struct event_base;

#define HEADER_BYTES SPOOL_HEADER_BYTES
#define NO_HOLE UINT64_MAX
#define NAME_LEN 64

struct append {
    STAILQ_ENTRY(append) link;    /* queue, batch or finished list */
    LIST_ENTRY(append) out_link;  /* outstanding list (loop thread) */
    spool_cb cb;                  /* loop thread; NULL once cancelled */
    void *arg;
    uint32_t seq; /* set by the writer: the segment written to */
    int err;      /* set by the writer: 0 durable, else an errno */
    uint64_t off; /* set by the writer: where the frame starts */
    uint32_t len; /* payload bytes */
    unsigned char data[];
};
STAILQ_HEAD(append_list, append);
LIST_HEAD(outstanding_list, append);

struct rec {
    uint64_t off; /* of the frame */
    uint32_t len; /* of the payload */
    uint32_t done;
};

/* A segment file in the index (loop thread). */
struct seg {
    TAILQ_ENTRY(seg) link; /* the spool's segs */
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
TAILQ_HEAD(seg_list, seg);

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
    struct seg_list segs; /* own segments by seq, then adopted ones, then new ones */
    struct seg *active;   /* the writer's current segment as last reported */
    uint32_t next_num;
    size_t pending;
    uint64_t pending_bytes, skipped_bytes, fsyncs, failed, undo_failed;
    struct outstanding_list outstanding;
    int stopping;
    unsigned char *peekbuf;
    size_t peekcap;

    /* shared, under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct append_list queue, finished;
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

/* ---- spool_files.c: names and .done files ---------------------------------- */

enum kind { K_SPOOL, K_DONE, K_TMP, K_CORRUPT, K_NONE };

/* A file of ours found in the directory. */
struct found {
    int worker;
    uint32_t seq;
    enum kind kind;
};

/* The records a .done file marks done past its offset. */
struct marks {
    unsigned char *bits; /* bit k: byte k / 8, value 1 << k % 8; NULL if none */
    size_t nbytes;
};

/* "w<worker>-<seq, 10 digits>.<ext of kind k>" */
void spool_file_name(char name[NAME_LEN], int worker, uint32_t seq, enum kind k);
void seg_file(char name[NAME_LEN], const struct seg *g, enum kind k);

/* Parses a file name of ours into f; returns 0, or -1 for other names. */
int spool_parse_name(const char *name, struct found *f) __attribute__((warn_unused_result));

/* Saves g's progress in its .done file (a temp file renamed over it); on
 * failure logs it and leaves g dirty. */
void seg_write_done(struct spool *s, struct seg *g);

/* g's .done file: returns the offset below which every record is done (0
 * when there is no file or it is malformed) and fills m with the marks past
 * it (none when their line is malformed: those records are replayed). The
 * caller frees m->bits. */
uint64_t seg_read_done(struct spool *s, const struct seg *g, struct marks *m);

/* Removes a finished segment's files; one with cut-off bytes is kept as
 * .spool.corrupt for inspection. */
void seg_remove_files(struct spool *s, struct seg *g);

/* ---- spool_index.c: the index (loop thread) -------------------------------- */

/* A new segment entry numbered after the others, not linked; NULL without
 * memory. */
struct seg *seg_new(struct spool *s, int worker, uint32_t seq);
void seg_free(struct seg *g);

/* Adds a pending record at off to g's index. Returns 0, or -1 (no memory). */
int seg_add(struct spool *s, struct seg *g, uint64_t off, uint32_t len)
    __attribute__((warn_unused_result));

/* Marks recs[i] done (once). */
void seg_mark_done(struct spool *s, struct seg *g, uint32_t i);

/* Moves done_off over the done records that follow it. */
void seg_advance(struct seg *g);

/* How many records from recs[head] on a bitmap of the .done file can name. */
uint32_t seg_markable(const struct seg *g);

/* Cuts g's valid part at off, where a bad record starts in a file of `size`
 * bytes: counts and logs the skipped bytes. */
void seg_cut_at(struct spool *s, struct seg *g, uint64_t off, uint64_t size,
                enum spool_rec_state why);

/* Indexes a durable append of the writer's. */
void spool_index_durable(struct spool *s, const struct append *a);

/* Saves progress and deletes finished segments. */
void spool_flush(struct spool *s);

/* The flush event's callback (arg: the spool), and a way to run it soon. */
void spool_on_flush(evutil_socket_t fd, short what, void *arg);
void spool_schedule_flush(struct spool *s);

/* ---- spool_recover.c: opening ---------------------------------------------- */

/* Prepares and opens dir and takes this worker's lock. Returns 0, or -1
 * with a message in err. */
int spool_open_dir(struct spool *s, const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Adopts orphans (worker 0), indexes every segment found and deletes those
 * with nothing pending. Returns 0, or -1 with a message in err. */
int spool_load(struct spool *s, const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- spool_writer.c: the writer thread ------------------------------------- */

/* The thread's body (arg: the spool): commits batches until s->stop. */
void *spool_writer_main(void *arg);

/* Closes the segment being appended to; the next batch starts a new one. */
void spool_writer_close(struct spool *s);

#endif
