/* watchdog.c — a thread that watches for handlers holding the loop (see watchdog.h). */
#include "watchdog.h"
#include "clock.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct watchdog {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    double period, kill_after;
    void (*overrun)(void *arg);
    void *arg;       /* what runs now, or NULL */
    double deadline; /* of what runs now */
    int fired;       /* overrun() called for what runs now */
    int stopping;
};

/* The loop thread is stuck, so nothing else writes stderr now; one write of
 * a preformatted line keeps this out of the logger's buffer. */
static void report_and_die(double late)
{
    char line[192];
    int n = snprintf(line, sizeof line,
                     "{\"level\":\"error\",\"msg\":\"a handler held the event loop %.1f s past "
                     "its deadline; ending the worker\",\"pid\":%d}\n",
                     late, (int)getpid());
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
        n = 0;
    kill(getpid(), SIGKILL);
}

static void check(struct watchdog *wd)
{
    if (wd->arg == NULL)
        return;
    double late = clock_mono() - wd->deadline;
    if (late < 0)
        return;
    if (!wd->fired) {
        wd->fired = 1;
        wd->overrun(wd->arg);
    } else if (late > wd->kill_after) {
        report_and_die(late);
    }
}

static void *watch(void *p)
{
    struct watchdog *wd = p;
    pthread_mutex_lock(&wd->lock);
    while (!wd->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        long ns = until.tv_nsec + (long)(wd->period * 1e9);
        until.tv_sec += ns / 1000000000L;
        until.tv_nsec = ns % 1000000000L;
        int rc = pthread_cond_timedwait(&wd->wake, &wd->lock, &until);
        if (rc == ETIMEDOUT)
            check(wd);
    }
    pthread_mutex_unlock(&wd->lock);
    return NULL;
}

struct watchdog *watchdog_start(double period_s, double kill_after_s, void (*overrun)(void *arg))
{
    struct watchdog *wd = calloc(1, sizeof *wd);
    if (wd == NULL)
        return NULL;
    wd->period = period_s;
    wd->kill_after = kill_after_s;
    wd->overrun = overrun;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int ok = pthread_mutex_init(&wd->lock, NULL) == 0 && pthread_cond_init(&wd->wake, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok || pthread_create(&wd->thread, NULL, watch, wd) != 0) {
        free(wd);
        return NULL;
    }
    return wd;
}

void watchdog_stop(struct watchdog *wd)
{
    if (wd == NULL)
        return;
    pthread_mutex_lock(&wd->lock);
    wd->stopping = 1;
    pthread_cond_signal(&wd->wake);
    pthread_mutex_unlock(&wd->lock);
    pthread_join(wd->thread, NULL);
    pthread_cond_destroy(&wd->wake);
    pthread_mutex_destroy(&wd->lock);
    free(wd);
}

void watchdog_enter(struct watchdog *wd, void *arg, double deadline)
{
    pthread_mutex_lock(&wd->lock);
    wd->arg = arg;
    wd->deadline = deadline;
    wd->fired = 0;
    pthread_mutex_unlock(&wd->lock);
}

void watchdog_leave(struct watchdog *wd)
{
    pthread_mutex_lock(&wd->lock);
    wd->arg = NULL;
    pthread_mutex_unlock(&wd->lock);
}
