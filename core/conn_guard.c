/* conn_guard.c — connection cap and slow-client reaper (see conn_guard.h). */
#include "conn_guard.h"
#include "clock.h"
#include "log.h"

#include <dirent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct slot {
    uint64_t peer;  /* identity of the connection on this fd; 0 = none */
    double since;   /* waiting for a request since (monotonic seconds) */
    int busy;       /* a request is being handled */
    int seen;       /* found by the current sweep */
};

struct conn_guard {
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *tick;
    int port;
    int max;
    double read_timeout;
    int counted;        /* at the last sweep */
    int accepted_since; /* since the last sweep */
    int paused;         /* listener disabled at the cap */
    int stopped;
    struct slot *slots;
    int nslots;
};

#define TICK_IDLE_S 1.0
#define TICK_PAUSED_S 0.1

static struct slot *slot_for(struct conn_guard *g, int fd)
{
    if (fd < 0)
        return NULL;
    if (fd >= g->nslots) {
        int n = g->nslots ? g->nslots : 256;
        while (n <= fd)
            n *= 2;
        struct slot *s = realloc(g->slots, (size_t)n * sizeof *s);
        if (s == NULL)
            return NULL;
        memset(s + g->nslots, 0, (size_t)(n - g->nslots) * sizeof *s);
        g->slots = s;
        g->nslots = n;
    }
    return &g->slots[fd];
}

static int local_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return -1;
}

static uint64_t peer_key(const struct sockaddr_storage *ss, socklen_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the address bytes */
    const unsigned char *p = (const unsigned char *)ss;
    for (socklen_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h ? h : 1;
}

/* Returns the peer identity when fd is a client connection to our port. */
static uint64_t client_identity(const struct conn_guard *g, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || local_port(&ss) != g->port)
        return 0;
    len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0; /* the listener itself, or not connected */
    return peer_key(&ss, len);
}

static void visit(struct conn_guard *g, int fd, double now)
{
    uint64_t id = client_identity(g, fd);
    if (id == 0)
        return;
    struct slot *s = slot_for(g, fd);
    if (s == NULL)
        return;
    if (s->peer != id) { /* a connection we have not seen on this fd */
        s->peer = id;
        s->since = now; /* busy stays: a request may already be running on it */
    }
    s->seen = 1;
    g->counted++;
    if (!s->busy && now - s->since > g->read_timeout) {
        shutdown(fd, SHUT_RDWR);
        s->since = now; /* evhttp closes it on its next read */
    }
}

int conn_guard_sweep(struct conn_guard *g)
{
    double now = clock_mono();
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return conn_guard_count(g);
    for (int i = 0; i < g->nslots; i++)
        g->slots[i].seen = 0;
    g->counted = 0;
    g->accepted_since = 0;
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        int fd = atoi(e->d_name);
        if (fd != dfd)
            visit(g, fd, now);
    }
    closedir(d);
    for (int i = 0; i < g->nslots; i++)
        if (!g->slots[i].seen)
            g->slots[i].peer = 0;
    return g->counted;
}

static void arm(struct conn_guard *g, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
    event_add(g->tick, &tv);
}

static void pause_or_resume(struct conn_guard *g)
{
    if (g->stopped)
        return;
    int over = conn_guard_count(g) >= g->max;
    if (over && !g->paused) {
        evconnlistener_disable(g->listener);
        g->paused = 1;
        log_warn("connection cap reached (%d); not accepting until some close", g->max);
        arm(g, TICK_PAUSED_S);
    } else if (!over && g->paused) {
        evconnlistener_enable(g->listener);
        g->paused = 0;
        arm(g, TICK_IDLE_S);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn_guard *g = arg;
    conn_guard_sweep(g);
    pause_or_resume(g);
    arm(g, g->paused ? TICK_PAUSED_S : TICK_IDLE_S);
}

struct conn_guard *conn_guard_new(struct event_base *base, struct evconnlistener *listener,
                                  int port, int max_connections, double read_timeout_s)
{
    struct conn_guard *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->base = base;
    g->listener = listener;
    g->port = port;
    g->max = max_connections;
    g->read_timeout = read_timeout_s;
    g->tick = event_new(base, -1, 0, on_tick, g);
    if (g->tick == NULL) {
        free(g);
        return NULL;
    }
    arm(g, TICK_IDLE_S);
    return g;
}

void conn_guard_free(struct conn_guard *g)
{
    if (g == NULL)
        return;
    event_free(g->tick);
    free(g->slots);
    free(g);
}

void conn_guard_set_limits(struct conn_guard *g, int max_connections, double read_timeout_s)
{
    g->max = max_connections;
    g->read_timeout = read_timeout_s;
    pause_or_resume(g);
}

void conn_guard_accepted(struct conn_guard *g)
{
    g->accepted_since++;
    if (conn_guard_count(g) >= g->max) {
        conn_guard_sweep(g);
        /* the connection being accepted is not visible to the sweep yet */
        g->accepted_since = 1;
        pause_or_resume(g);
    }
}

void conn_guard_busy(struct conn_guard *g, int fd)
{
    struct slot *s = slot_for(g, fd);
    if (s != NULL)
        s->busy = 1;
}

void conn_guard_idle(struct conn_guard *g, int fd)
{
    struct slot *s = slot_for(g, fd);
    if (s != NULL) {
        s->busy = 0;
        s->since = clock_mono();
    }
}

int conn_guard_count(const struct conn_guard *g)
{
    return g->counted + g->accepted_since;
}

void conn_guard_stop_accepting(struct conn_guard *g)
{
    g->stopped = 1;
    if (!g->paused)
        evconnlistener_disable(g->listener);
    g->paused = 1;
}
