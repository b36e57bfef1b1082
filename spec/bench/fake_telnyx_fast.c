/* A fast fake of the Telnyx messaging API for bench_broadcasts.sh: one
 * thread, epoll, plain HTTP on 127.0.0.1.
 *
 *   fake_telnyx_fast PORTFILE LOG
 *
 * Listens on a free port and writes it to PORTFILE. POST /v2/messages gets
 * 200 {"data":{"id":"fake-N","to":[{"status":"queued"}]}}; anything else 404.
 * Each POST appends one line "SECONDS FROM TO" to LOG (the time it arrived,
 * and the body's "from" and "to"), through a stdio buffer flushed once a
 * second and at SIGTERM or SIGINT: no write or fsync per request. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST 65536
#define MAX_EVENTS 256

struct conn {
    int fd;
    size_t len;
    char buf[MAX_REQUEST + 1];
};

static volatile sig_atomic_t stopping;
static unsigned long answered;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copies the JSON string value of "key" in body into out (at most cap - 1
 * bytes; escapes are not decoded: phone numbers have none), or "-". */
static void json_string(const char *body, const char *key, char *out, size_t cap)
{
    char pattern[32];
    const char *p, *end;
    size_t n;

    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    p = strstr(body, pattern);
    if (p == NULL) {
        snprintf(out, cap, "-");
        return;
    }
    p += strlen(pattern);
    end = strchr(p, '"');
    n = end ? (size_t)(end - p) : 0;
    if (n == 0 || n >= cap) {
        snprintf(out, cap, "-");
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

/* 1 when buf holds a whole request (headers and Content-Length bytes of
 * body), 0 when more is to come, -1 when it cannot be one. */
static int complete(struct conn *c, char **body)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4), *cl;
    size_t head, want = 0;

    if (end == NULL) return c->len >= MAX_REQUEST ? -1 : 0;
    head = (size_t)(end - c->buf) + 4;
    *end = '\0';
    cl = strcasestr(c->buf, "\r\ncontent-length:");
    *end = '\r';
    if (cl != NULL) want = strtoul(cl + 17, NULL, 10);
    if (head + want > MAX_REQUEST) return -1;
    if (c->len < head + want) return 0;
    *body = c->buf + head;
    return 1;
}

static void reply(int fd, const char *status, const char *body)
{
    char out[512];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s", status, strlen(body), body);
    ssize_t w;

    if (n < 0 || (size_t)n >= sizeof out) return;
    /* a short answer on a fresh socket: one write (a failure only loses
     * this answer; the client sees the connection close) */
    w = write(fd, out, (size_t)n);
    (void)w;
}

static void answer(struct conn *c, char *body, FILE *log)
{
    char from[64], to[64], data[128];
    double at = now_s();

    c->buf[c->len] = '\0';
    if (strncmp(c->buf, "POST /v2/messages ", 18) != 0) {
        reply(c->fd, "404 Not Found", "{\"errors\":[{\"title\":\"not found\"}]}");
        return;
    }
    json_string(body, "from", from, sizeof from);
    json_string(body, "to", to, sizeof to);
    fprintf(log, "%.6f %s %s\n", at, from, to);
    answered++;
    snprintf(data, sizeof data, "{\"data\":{\"id\":\"fake-%lu\",\"to\":[{\"status\":\"queued\"}]}}", answered);
    reply(c->fd, "200 OK", data);
}

static void drop(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Reads what c's socket has; answers and drops it once the request is whole. */
static void readable(int ep, struct conn *c, FILE *log)
{
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, MAX_REQUEST - c->len);
        char *body = NULL;
        int done;

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            drop(ep, c);
            return;
        }
        c->len += (size_t)n;
        done = complete(c, &body);
        if (done != 0) {
            if (done > 0) answer(c, body, log);
            drop(ep, c);
            return;
        }
    }
}

static void accept_all(int ep, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN };
        struct conn *c;

        if (fd < 0) return; /* EAGAIN, or a connection that went away */
        c = malloc(sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->len = 0;
        ev.data.ptr = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
        }
    }
}

static int listen_on(const char *portfile)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    FILE *f;

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4096) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        perror("fake_telnyx_fast: listen");
        exit(1);
    }
    f = fopen(portfile, "w");
    if (f == NULL || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) != 0) {
        perror("fake_telnyx_fast: port file");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct sigaction sa = { .sa_handler = on_signal };
    struct epoll_event ev = { .events = EPOLLIN }, events[MAX_EVENTS];
    static char logbuf[1 << 20];
    double flushed = now_s();
    FILE *log;
    int lfd, ep;

    if (argc != 3) {
        fprintf(stderr, "usage: fake_telnyx_fast PORTFILE LOG\n");
        return 2;
    }
    log = fopen(argv[2], "a");
    if (log == NULL || setvbuf(log, logbuf, _IOFBF, sizeof logbuf) != 0) {
        perror("fake_telnyx_fast: log");
        return 1;
    }
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    lfd = listen_on(argv[1]);
    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.data.ptr = NULL;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        perror("fake_telnyx_fast: epoll");
        return 1;
    }
    while (!stopping) {
        int n = epoll_wait(ep, events, MAX_EVENTS, 200);

        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) accept_all(ep, lfd);
            else readable(ep, events[i].data.ptr, log);
        }
        if (now_s() - flushed >= 1.0) {
            fflush(log);
            flushed = now_s();
        }
    }
    return fclose(log) == 0 ? 0 : 1;
}
