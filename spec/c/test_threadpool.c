/* test_threadpool.c — jobs run off the loop thread and complete on it. */
#include "threadpool.h"
#include "tap.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct job {
    struct tp_job tp;
    pthread_t ran_on;
    pthread_t done_on;
    int done;
    int *finished;
    struct event_base *base;
    int total;
};

static void work(struct tp_job *j)
{
    struct job *x = (struct job *)j;
    x->ran_on = pthread_self();
    usleep(2000);
}

static void done(struct tp_job *j)
{
    struct job *x = (struct job *)j;
    x->done_on = pthread_self();
    x->done = 1;
    if (++*x->finished == x->total)
        event_base_loopexit(x->base, NULL);
}

static void jobs_run_on_threads_and_finish_on_loop(void)
{
    struct event_base *base = event_base_new();
    struct threadpool *tp = threadpool_new(base, 2, 64);
    CHECK(tp != NULL);
    enum { N = 20 };
    struct job jobs[N] = {0};
    int finished = 0;
    for (int i = 0; i < N; i++) {
        jobs[i].tp.work = work;
        jobs[i].tp.done = done;
        jobs[i].finished = &finished;
        jobs[i].base = base;
        jobs[i].total = N;
        CHECK(threadpool_submit(tp, &jobs[i].tp) == 0);
    }
    struct timeval limit = {10, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    CHECK(finished == N);
    for (int i = 0; i < N; i++) {
        CHECK(jobs[i].done && !jobs[i].tp.cancelled);
        CHECK(!pthread_equal(jobs[i].ran_on, pthread_self()));
        CHECK(pthread_equal(jobs[i].done_on, pthread_self()));
    }
    CHECK(threadpool_pending(tp) == 0);
    threadpool_free(tp);
    event_base_free(base);
}

static void queue_is_bounded(void)
{
    struct event_base *base = event_base_new();
    struct threadpool *tp = threadpool_new(base, 1, 2);
    enum { N = 10 };
    struct job jobs[N] = {0};
    int finished = 0, accepted = 0;
    for (int i = 0; i < N; i++) {
        jobs[i].tp.work = work;
        jobs[i].tp.done = done;
        jobs[i].finished = &finished;
        jobs[i].base = base;
        jobs[i].total = -1;
        accepted += threadpool_submit(tp, &jobs[i].tp) == 0;
    }
    /* one may already be running, two may wait */
    CHECK(accepted >= 2 && accepted <= 3);
    threadpool_free(tp); /* delivers every accepted job, cancelled or not */
    CHECK(finished == accepted);
    event_base_free(base);
}

static const struct tap_case cases[] = {
    {"jobs run on pool threads and complete on the loop thread",
     jobs_run_on_threads_and_finish_on_loop},
    {"the queue is bounded and freeing delivers every job", queue_is_bounded},
};

TAP_MAIN(cases)
