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
    uint64_t addr;  /* the client's address (without its port), hashed */
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
    int per_address; /* connections one client address may hold; 0 = any */
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
#define SHED_IDLE_S 0.5 /* a connection idle this long may be shed at the cap */

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
/* The client address of ss without its port, hashed like peer_key. */
static uint64_t address_key(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        struct sockaddr_storage a = {0};
        memcpy(&a, &in->sin_addr, sizeof in->sin_addr);
        return peer_key(&a, sizeof in->sin_addr);
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    struct sockaddr_storage a = {0};
    memcpy(&a, &in6->sin6_addr, sizeof in6->sin6_addr);
    return peer_key(&a, sizeof in6->sin6_addr);
}

/* The identity of the client connection on fd (0 if fd is none of ours);
 * its address key in *addr. */
static uint64_t client_identity(const struct conn_guard *g, int fd, uint64_t *addr)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || local_port(&ss) != g->port)
        return 0;
    len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0; /* the listener itself, or not connected */
    *addr = address_key(&ss);
    return peer_key(&ss, len);
}

static void visit(struct conn_guard *g, int fd, double now)
{
    uint64_t addr = 0;
    uint64_t id = client_identity(g, fd, &addr);
    if (id == 0)
        return;
    struct slot *s = slot_for(g, fd);
    if (s == NULL)
        return;
    if (s->peer != id) { /* a connection we have not seen on this fd */
        s->peer = id;
        s->addr = addr;
        s->since = now; /* busy stays: a request may already be running on it */
    }
    s->seen = 1;
    g->counted++;
    if (!s->busy && now - s->since > g->read_timeout) {
        shutdown(fd, SHUT_RDWR);
        s->since = now; /* evhttp closes it on its next read */
    }
}

/* A connection the sweep saw, for the shedding rules. */
struct conn {
    int fd;
    double since;
    uint64_t addr;
    int busy;
    int shed;
};

static int by_since(const void *a, const void *b)
{
    double x = ((const struct conn *)a)->since, y = ((const struct conn *)b)->since;
    return (x > y) - (x < y);
}

static int by_address_then_since(const void *a, const void *b)
{
    uint64_t x = ((const struct conn *)a)->addr, y = ((const struct conn *)b)->addr;
    if (x != y)
        return (x > y) - (x < y);
    return by_since(a, b);
}

/* The connections of the last sweep in a new array of *n (the caller frees
 * it), or NULL when out of memory: the read timeout still ends them. */
static struct conn *seen_conns(const struct conn_guard *g, int *n)
{
    struct conn *c = malloc((size_t)(g->counted > 0 ? g->counted : 1) * sizeof *c);
    *n = 0;
    for (int fd = 0; c != NULL && fd < g->nslots && *n < g->counted; fd++) {
        const struct slot *s = &g->slots[fd];
        if (s->seen)
            c[(*n)++] = (struct conn){fd, s->since, s->addr, s->busy, 0};
    }
    return c;
}

static void shed(struct conn_guard *g, struct conn *c, double now)
{
    shutdown(c->fd, SHUT_RDWR); /* evhttp closes it on its next read */
    c->shed = 1;
    g->slots[c->fd].since = now;
}

/* Past per_address connections from one client address: shuts down the
 * newest of its idle ones (a running request is never cut). Returns how
 * many it shut down. */
static int shed_per_address(struct conn_guard *g, struct conn *c, int n, double now)
{
    if (g->per_address <= 0 || n <= g->per_address)
        return 0;
    qsort(c, (size_t)n, sizeof *c, by_address_then_since);
    int count = 0;
    for (int i = 0, held = 0; i < n; i++) {
        held = i > 0 && c[i].addr == c[i - 1].addr ? held + 1 : 1;
        if (held > g->per_address && !c[i].busy) {
            shed(g, &c[i], now);
            count++;
        }
    }
    if (count > 0)
        log_warn("closed %d connections past limits.max_connections_per_address (%d)", count,
                 g->per_address);
    return count;
}

/* With `live` connections at the cap: shuts down those idle longest (at
 * least SHED_IDLE_S), down to 90% of the cap (at least one below it). */
static void shed_idle(struct conn_guard *g, struct conn *c, int n, int live, double now)
{
    int room = g->max / 10 > 0 ? g->max / 10 : 1;
    int excess = live - (g->max - room);
    if (excess <= 0)
        return;
    qsort(c, (size_t)n, sizeof *c, by_since);
    int count = 0;
    for (int i = 0; i < n && count < excess; i++) {
        if (!c[i].shed && !c[i].busy && now - c[i].since >= SHED_IDLE_S) {
            shed(g, &c[i], now);
            count++;
        }
    }
    if (count > 0)
        log_info("connection cap: closed %d idle connections to let others in", count);
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
    int over_address = g->per_address > 0 && g->counted > g->per_address;
    if (over_address || g->counted >= g->max) {
        int n;
        struct conn *c = seen_conns(g, &n);
        if (c != NULL) {
            int live = g->counted - shed_per_address(g, c, n, now);
            if (live >= g->max)
                shed_idle(g, c, n, live, now);
            free(c);
        }
    }
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
                                  int port, int max_connections, int per_address,
                                  double read_timeout_s)
{
    struct conn_guard *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->base = base;
    g->listener = listener;
    g->port = port;
    g->max = max_connections;
    g->per_address = per_address;
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

void conn_guard_set_limits(struct conn_guard *g, int max_connections, int per_address,
                           double read_timeout_s)
{
    g->max = max_connections;
    g->per_address = per_address;
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
