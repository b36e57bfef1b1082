/* threadpool.c — fixed thread pool with loop-thread completions (see threadpool.h). */
#include "threadpool.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct job_list {
    struct tp_job *head, *tail;
};

struct threadpool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct job_list queued;   /* waiting for a thread */
    struct job_list finished; /* waiting for the loop */
    int nqueued;              /* length of queued */
    int running;              /* jobs inside work() */
    int max_queued;
    int stopping;
    int nthreads;
    pthread_t *threads;
    int efd;
    struct event *ev;
};

static void list_push(struct job_list *l, struct tp_job *j)
{
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
}

static struct tp_job *list_take_all(struct job_list *l)
{
    struct tp_job *all = l->head;
    l->head = l->tail = NULL;
    return all;
}

static void *thread_main(void *arg)
{
    struct threadpool *tp = arg;
    /* Linux: the nice value is per thread. Best effort: a pool at the loop's
     * priority still works, it only answers other requests later. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), THREADPOOL_NICE);
    pthread_mutex_lock(&tp->lock);
    for (;;) {
        while (!tp->stopping && tp->queued.head == NULL)
            pthread_cond_wait(&tp->wake, &tp->lock);
        if (tp->stopping)
            break;
        struct tp_job *job = tp->queued.head;
        tp->queued.head = job->next;
        if (tp->queued.head == NULL)
            tp->queued.tail = NULL;
        tp->nqueued--;
        tp->running++;
        pthread_mutex_unlock(&tp->lock);

        job->work(job);

        pthread_mutex_lock(&tp->lock);
        tp->running--;
        list_push(&tp->finished, job);
        uint64_t one = 1;
        /* The counter cannot overflow in practice; a failed write would only
         * delay delivery until the next completion. */
        if (write(tp->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            abort();
    }
    pthread_mutex_unlock(&tp->lock);
    return NULL;
}

static void deliver(struct tp_job *all)
{
    while (all) {
        struct tp_job *next = all->next;
        all->done(all); /* may free the job */
        all = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct threadpool *tp = arg;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        abort();
    pthread_mutex_lock(&tp->lock);
    struct tp_job *all = list_take_all(&tp->finished);
    pthread_mutex_unlock(&tp->lock);
    deliver(all);
}

struct threadpool *threadpool_new(struct event_base *base, int threads, int max_queued)
{
    struct threadpool *tp = calloc(1, sizeof *tp);
    if (tp == NULL)
        return NULL;
    tp->max_queued = max_queued;
    tp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    tp->threads = calloc((size_t)threads, sizeof *tp->threads);
    if (tp->efd < 0 || tp->threads == NULL ||
        pthread_mutex_init(&tp->lock, NULL) != 0) {
        if (tp->efd >= 0)
            close(tp->efd);
        free(tp->threads);
        free(tp);
        return NULL;
    }
    pthread_cond_init(&tp->wake, NULL);
    tp->ev = event_new(base, tp->efd, EV_READ | EV_PERSIST, on_wake, tp);
    if (tp->ev == NULL || event_add(tp->ev, NULL) != 0) {
        threadpool_free(tp);
        return NULL;
    }
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&tp->threads[i], NULL, thread_main, tp) != 0) {
            threadpool_free(tp);
            return NULL;
        }
        tp->nthreads++;
    }
    return tp;
}

int threadpool_submit(struct threadpool *tp, struct tp_job *job)
{
    pthread_mutex_lock(&tp->lock);
    int ok = !tp->stopping && tp->nqueued < tp->max_queued;
    if (ok) {
        job->cancelled = 0;
        list_push(&tp->queued, job);
        tp->nqueued++;
        pthread_cond_signal(&tp->wake);
    }
    pthread_mutex_unlock(&tp->lock);
    return ok ? 0 : -1;
}

int threadpool_pending(const struct threadpool *tp)
{
    struct threadpool *m = (struct threadpool *)tp;
    pthread_mutex_lock(&m->lock);
    int n = m->nqueued + m->running;
    pthread_mutex_unlock(&m->lock);
    return n;
}

void threadpool_free(struct threadpool *tp)
{
    if (tp == NULL)
        return;
    pthread_mutex_lock(&tp->lock);
    tp->stopping = 1;
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->lock);
    for (int i = 0; i < tp->nthreads; i++)
        pthread_join(tp->threads[i], NULL);
    struct tp_job *never_ran = list_take_all(&tp->queued);
    for (struct tp_job *j = never_ran; j; j = j->next)
        j->cancelled = 1;
    deliver(list_take_all(&tp->finished));
    deliver(never_ran);
    if (tp->ev)
        event_free(tp->ev);
    close(tp->efd);
    pthread_cond_destroy(&tp->wake);
    pthread_mutex_destroy(&tp->lock);
    free(tp->threads);
    free(tp);
}
