/* http_conn.c — client connections read through a framer (see http_conn.h).
 *
 * How the bytes flow. bufferevent_socket reads into its input buffer with
 * the end of that buffer unfrozen, and the buffer's callbacks run before the
 * bufferevent's read callback (evhttp_read_cb). on_input moves what was read
 * to c->raw, runs the framer, and appends a header block it hands over, which
 * evhttp then parses at once: evhttp never sees a byte the framer has not
 * handed over. Outside a read the input's end is frozen, so a block framed
 * later (on_kick, after an answer, from bytes already read) is appended with
 * the end unfrozen for that moment, and evhttp's read callback is triggered.
 *
 * Which connection. evhttp keeps its connection (evcon) private; the one
 * thing it lends us is the argument it gives the bufferevent's callbacks,
 * which is the evcon (http.c, evhttp_connection_base_bufferevent_new and
 * every later bufferevent_setcb). on_accepted, run once evhttp has set the
 * connection up, reads it there to register our close callback, and indexes
 * the connection by file descriptor for http_conns_find. */
#include "http_conn.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

/* Bytes read ahead (pipelined) while a request is being answered, beyond
 * which reading pauses until the answer is written. */
#define READ_AHEAD_MAX 65536

struct http_conn {
    LIST_ENTRY(http_conn) link;
    struct http_conns *set;
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until on_accepted */
    struct http_framer *framer;
    struct evbuffer *raw; /* read and not yet framed */
    struct evbuffer_cb_entry *watch;
    struct event accepted; /* on_accepted, once */
    struct event kick;     /* on_kick: frames bytes already read */
    int fd;                /* -1 until on_accepted */
    int busy;              /* inside our own changes to the input buffer */
    void (*on_close)(void *arg);
    void *on_close_arg;
};

struct http_conns {
    struct event_base *base;
    struct http_framer_limits limits;
    http_path_limit_fn limit;
    void *arg;
    struct evbuffer *block; /* scratch: a block on its way to evhttp */
    LIST_HEAD(, http_conn) all;
    struct http_conn **by_fd;
    int nfds;
};

/* ---- the body limit ------------------------------------------------------ */

/* The framer's limit callback: parses the request target as evhttp will
 * (http.c, evhttp_parse_request_line) and asks cs->limit for its path. */
static long limit_of(void *arg, const char *method, size_t method_len, const char *target,
                     size_t target_len)
{
    struct http_conns *cs = arg;
    if (cs->limit == NULL)
        return 0;
    char *m = strndup(method, method_len);
    char *t = strndup(target, target_len);
    struct evhttp_uri *uri = t ? evhttp_uri_parse_with_flags(t, EVHTTP_URI_NONCONFORMANT) : NULL;
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    long limit = m && uri ? cs->limit(cs->arg, m, path && *path ? path : "/") : 0;
    if (uri)
        evhttp_uri_free(uri);
    free(t);
    free(m);
    return limit;
}

/* ---- framing ------------------------------------------------------------- */

/* Writes "100 Continue" at once when nothing else is on its way out; what the
 * socket does not take waits in the output buffer, ahead of the answer. */
static void send_continue(struct http_conn *c)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    size_t len = sizeof line - 1;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    ssize_t n = 0;
    if (evbuffer_get_length(out) == 0)
        n = send(bufferevent_getfd(c->bev), line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
        n = 0;
    if ((size_t)n < len && evbuffer_add(out, line + n, len - (size_t)n) != 0)
        shutdown(bufferevent_getfd(c->bev), SHUT_RDWR); /* a torn 100: end it */
}

/* Gives evhttp the block the framer handed over. Outside a read (kicked) the
 * input's end is frozen: unfreeze it for the append, then run evhttp's read
 * callback, as a read would. */
static void hand_to_evhttp(struct http_conn *c, int kicked)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (kicked)
        evbuffer_unfreeze(in, 0);
    int rc = evbuffer_add_buffer(in, c->set->block);
    if (kicked)
        evbuffer_freeze(in, 0);
    if (rc != 0) {
        log_error("http: cannot pass a request to evhttp (out of memory)");
        shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
        return;
    }
    if (kicked)
        bufferevent_trigger(c->bev, EV_READ, 0);
}

/* Frames what c->raw holds. */
static void frame(struct http_conn *c, int kicked)
{
    switch (http_framer_read(c->framer, c->raw, c->set->block)) {
    case HTTP_FRAMER_MORE:
        if (http_framer_holding(c->framer) &&
            evbuffer_get_length(c->raw) > (size_t)c->set->limits.header_bytes + READ_AHEAD_MAX)
            bufferevent_disable(c->bev, EV_READ); /* evhttp enables it for the next request */
        return;
    case HTTP_FRAMER_CONTINUE:
        send_continue(c);
        return;
    case HTTP_FRAMER_REQUEST:
        hand_to_evhttp(c, kicked);
        return;
    case HTTP_FRAMER_ERROR:
        log_error("http: out of memory reading a request; closing its connection");
        shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
        return;
    default:
        abort();
    }
}

/* The input buffer's callback: runs inside evbuffer_read (bytes added), and
 * when evhttp or we take bytes out (ignored). */
static void on_input(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    struct http_conn *c = arg;
    if (c->busy || info->n_added == 0)
        return;
    c->busy = 1;
    if (evbuffer_add_buffer(c->raw, in) != 0) {
        log_error("http: out of memory reading a request; closing its connection");
        evbuffer_drain(in, evbuffer_get_length(in));
        shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
    } else {
        frame(c, 0);
    }
    c->busy = 0;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    c->busy = 1;
    frame(c, 1);
    c->busy = 0;
}

/* ---- life cycle ---------------------------------------------------------- */

static int index_fd(struct http_conns *cs, struct http_conn *c)
{
    if (c->fd >= cs->nfds) {
        int n = cs->nfds ? cs->nfds : 256;
        while (n <= c->fd)
            n *= 2;
        struct http_conn **by_fd = realloc(cs->by_fd, (size_t)n * sizeof *by_fd);
        if (by_fd == NULL)
            return -1;
        memset(by_fd + cs->nfds, 0, (size_t)(n - cs->nfds) * sizeof *by_fd);
        cs->by_fd = by_fd;
        cs->nfds = n;
    }
    cs->by_fd[c->fd] = c;
    return 0;
}

/* Frees c. `bev_alive`: the bufferevent still exists, so our callback on its
 * input is removed; otherwise the input went with it. */
static void conn_free(struct http_conn *c, int bev_alive)
{
    struct http_conns *cs = c->set;
    if (c->fd >= 0 && c->fd < cs->nfds && cs->by_fd[c->fd] == c)
        cs->by_fd[c->fd] = NULL;
    if (bev_alive)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
    event_del(&c->accepted);
    event_del(&c->kick);
    LIST_REMOVE(c, link);
    http_framer_free(c->framer);
    evbuffer_free(c->raw);
    free(c);
}

/* evhttp frees the connection: tell the watcher, then go. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct http_conn *c = arg;
    void (*watcher)(void *) = c->on_close;
    c->on_close = NULL;
    if (watcher)
        watcher(c->on_close_arg);
    conn_free(c, 1);
}

/* Runs once, right after evhttp set the connection up (before any read):
 * our reference kept the bufferevent alive even if evhttp gave up on it. */
static void on_accepted(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct http_conn *c = arg;
    struct bufferevent *bev = c->bev;
    bufferevent_event_cb eventcb = NULL;
    void *evcon = NULL;
    bufferevent_getcb(bev, NULL, NULL, &eventcb, &evcon);
    if (eventcb == NULL || evcon == NULL ||
        evhttp_connection_get_bufferevent(evcon) != bev) { /* freed: callbacks cleared */
        conn_free(c, 1);
        bufferevent_decref(bev);
        return;
    }
    c->evcon = evcon;
    c->fd = bufferevent_getfd(bev);
    evhttp_connection_set_closecb(c->evcon, on_close, c);
    if (index_fd(c->set, c) != 0) {
        log_error("http: out of memory indexing a connection; closing it");
        shutdown(c->fd, SHUT_RDWR);
    }
    bufferevent_decref(bev);
}

struct bufferevent *http_conns_bufferevent(struct http_conns *cs)
{
    struct http_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->set = cs;
    c->fd = -1;
    c->bev = bufferevent_socket_new(cs->base, -1, BEV_OPT_CLOSE_ON_FREE);
    c->framer = http_framer_new(&cs->limits, limit_of, cs);
    c->raw = evbuffer_new();
    c->watch = c->bev ? evbuffer_add_cb(bufferevent_get_input(c->bev), on_input, c) : NULL;
    if (c->watch == NULL || c->framer == NULL || c->raw == NULL ||
        event_assign(&c->accepted, cs->base, -1, 0, on_accepted, c) != 0 ||
        event_assign(&c->kick, cs->base, -1, 0, on_kick, c) != 0) {
        if (c->bev)
            bufferevent_free(c->bev);
        http_framer_free(c->framer);
        if (c->raw)
            evbuffer_free(c->raw);
        free(c);
        return NULL;
    }
    LIST_INSERT_HEAD(&cs->all, c, link);
    bufferevent_incref(c->bev); /* until on_accepted */
    event_active(&c->accepted, EV_TIMEOUT, 1);
    return c->bev;
}

struct http_conn *http_conns_find(struct http_conns *cs, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    int fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0 || fd >= cs->nfds || cs->by_fd[fd] == NULL || cs->by_fd[fd]->bev != bev)
        return NULL;
    return cs->by_fd[fd];
}

void http_conns_answered(struct http_conns *cs, struct evhttp_request *req)
{
    struct http_conn *c = http_conns_find(cs, req);
    if (c == NULL)
        return;
    c->on_close = NULL; /* the answer is out: no one waits for it any more */
    http_framer_next(c->framer);
    if (evbuffer_get_length(c->raw) > 0 && !http_framer_holding(c->framer))
        event_active(&c->kick, EV_TIMEOUT, 1); /* after evhttp starts reading again */
}

int http_conn_refused(const struct http_conn *c)
{
    return http_framer_refused(c->framer);
}

const char *http_conn_why(const struct http_conn *c)
{
    return http_framer_why(c->framer);
}

struct evbuffer *http_conn_body(struct http_conn *c)
{
    return http_framer_body(c->framer);
}

void http_conn_watch(struct http_conn *c, void (*on_close_fn)(void *arg), void *arg)
{
    c->on_close = on_close_fn;
    c->on_close_arg = arg;
}

struct http_conns *http_conns_new(struct event_base *base, long header_bytes, long body_bytes,
                                  http_path_limit_fn limit, void *arg)
{
    struct http_conns *cs = calloc(1, sizeof *cs);
    if (cs == NULL)
        return NULL;
    cs->base = base;
    cs->limits.header_bytes = header_bytes;
    cs->limits.body_bytes = body_bytes;
    cs->limit = limit;
    cs->arg = arg;
    LIST_INIT(&cs->all);
    cs->block = evbuffer_new();
    if (cs->block == NULL) {
        free(cs);
        return NULL;
    }
    return cs;
}

void http_conns_set_limits(struct http_conns *cs, long header_bytes, long body_bytes)
{
    cs->limits.header_bytes = header_bytes;
    cs->limits.body_bytes = body_bytes;
}

void http_conns_free(struct http_conns *cs)
{
    if (cs == NULL)
        return;
    while (!LIST_EMPTY(&cs->all)) {
        struct http_conn *c = LIST_FIRST(&cs->all);
        struct bufferevent *bev = c->evcon ? NULL : c->bev; /* still referenced by us */
        conn_free(c, bev != NULL);
        if (bev)
            bufferevent_decref(bev);
    }
    evbuffer_free(cs->block);
    free(cs->by_fd);
    free(cs);
}
