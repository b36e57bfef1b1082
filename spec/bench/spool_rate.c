/* spool_rate.c — durable appends per second through core/spool*.c.
 *
 *   spool_rate DIR SECONDS INFLIGHT [BYTES]
 *
 * Opens a spool in DIR (worker 0 of 1; DIR must not be in use) on an
 * event_base and keeps INFLIGHT appends of BYTES (default 600, about a
 * webhook) outstanding for SECONDS: each callback appends again, until the
 * time is up. INFLIGHT 1 is one append at a time (append, wait for it to be
 * durable, append again), i.e. one fdatasync per record; more lets the
 * writer thread commit several in one write and one fdatasync (group
 * commit). Prints "APPENDS_PER_S APPENDS FSYNCS SECONDS", counting appends
 * whose callback reported them durable.
 *
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Icore -o spool_rate spec/bench/spool_rate.c core/spool*.c core/log.c \
 *      $(pkg-config --cflags --libs libevent) -lpthread */
#include "log.h"
#include "spool.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct spool *sp;
static struct event_base *base;
static unsigned char payload[SPOOL_MAX_RECORD < 65536 ? SPOOL_MAX_RECORD : 65536];
static size_t payload_len = 600;
static int stopping, failed;
static long inflight, durable;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_durable(void *arg, const char *err);

static int append_one(void)
{
    if (spool_append(sp, payload, payload_len, on_durable, NULL) != 0) {
        perror("spool_append");
        return -1;
    }
    inflight++;
    return 0;
}

static void on_durable(void *arg, const char *err)
{
    inflight--;
    if (err != NULL) {
        fprintf(stderr, "spool_rate: append failed: %s\n", err);
        failed = 1;
        stopping = 1;
    } else {
        durable++;
    }
    if (!stopping && append_one() != 0) {
        failed = 1;
        stopping = 1;
    }
    if (stopping && inflight == 0)
        event_base_loopbreak(base);
}

static void on_time(evutil_socket_t fd, short what, void *arg)
{
    stopping = 1;
    if (inflight == 0)
        event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: spool_rate DIR SECONDS INFLIGHT [BYTES]\n");
        return 2;
    }
    double seconds = atof(argv[2]);
    long k = atol(argv[3]);
    if (argc == 5)
        payload_len = (size_t)atol(argv[4]);
    if (seconds <= 0 || k < 1 || payload_len < 1 || payload_len > sizeof payload) {
        fprintf(stderr, "spool_rate: bad arguments\n");
        return 2;
    }
    for (size_t i = 0; i < payload_len; i++)
        payload[i] = (unsigned char)('a' + i % 26);
    log_set_level(LOG_WARN);
    base = event_base_new();
    char err[256];
    sp = spool_open(base, argv[1], 0, 1, err, sizeof err);
    if (sp == NULL) {
        fprintf(stderr, "spool_rate: %s\n", err);
        return 1;
    }
    struct event *timer = evtimer_new(base, on_time, NULL);
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    double t0 = now();
    evtimer_add(timer, &tv);
    for (long i = 0; i < k; i++)
        if (append_one() != 0)
            return 1;
    event_base_dispatch(base);
    double t1 = now();
    struct spool_stats st;
    spool_stats(sp, &st);
    event_free(timer);
    spool_free(sp);
    event_base_free(base);
    if (failed)
        return 1;
    printf("%.1f %ld %llu %.3f\n", (double)durable / (t1 - t0), durable, (unsigned long long)st.fsyncs,
           t1 - t0);
    return 0;
}
