/* threadpool.h — a small fixed pool of threads for CPU-heavy work.
 *
 * Jobs run off the event-loop thread; their completion callbacks run on the
 * loop thread, woken through an eventfd watched by the loop. The queue is
 * bounded: submit refuses work past `max_queued`, so memory stays bounded
 * under a flood. Pool threads run at a lower priority (THREADPOOL_NICE) than
 * the loop, so a flood of jobs (password hashes) does not slow the requests
 * that need no job. */
#ifndef STEEPLE_THREADPOOL_H
#define STEEPLE_THREADPOOL_H

/* The nice value of pool threads, relative to the process's. */
#define THREADPOOL_NICE 10

struct event_base;
struct threadpool;

struct tp_job {
    /* Runs on a pool thread. Must not touch the loop, Lua or logging state. */
    void (*work)(struct tp_job *job);
    /* Runs on the loop thread after work(); owns the job from then on. */
    void (*done)(struct tp_job *job);
    struct tp_job *next; /* private to the pool */
    int cancelled;       /* set before done() when the work never ran */
};

/* Starts `threads` threads. Returns NULL on failure. */
struct threadpool *threadpool_new(struct event_base *base, int threads, int max_queued)
    __attribute__((warn_unused_result));

/* Queues a job. Returns 0, or -1 when the queue is full or the pool is
 * stopping (the job is then still the caller's). */
int threadpool_submit(struct threadpool *tp, struct tp_job *job)
    __attribute__((warn_unused_result));

/* Jobs queued or running (finished ones awaiting delivery not counted). */
int threadpool_pending(const struct threadpool *tp);

/* Stops the threads after the running jobs finish, then calls done() for
 * every job still held: finished ones normally, never-run ones with
 * `cancelled` set. Frees the pool. */
void threadpool_free(struct threadpool *tp);

#endif
