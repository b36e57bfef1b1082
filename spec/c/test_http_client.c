/* test_http_client.c — the outbound HTTP client against real local servers
 * on the same event_base: plain evhttp, two HTTPS evhttp servers with
 * self-signed certificates made by the openssl CLI at start (A: localhost
 * and 127.0.0.1; B: localhost only), a listener that accepts and never
 * speaks, and a port nobody listens on. */
#include "http_client.h"
#include "tap.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static struct event_base *base;
static struct http_client *client_a;   /* trusts certificate A */
static struct http_client *client_b;   /* trusts certificate B */
static struct http_client *client_sys; /* default CAs only */
static struct evhttp *srv_http, *srv_tls_a, *srv_tls_b;
static SSL_CTX *ctx_a, *ctx_b;
static struct evconnlistener *silent, *raw;
static int silent_fds[16], nsilent;
static int port_http, port_a, port_b, port_silent, port_refused, port_raw;
static char dir[64], cert_a[128], cert_b[128], key_a[128], key_b[128];
static struct event *ticker;
static int hangs; /* /hang requests the servers received */

/* ---- servers ------------------------------------------------------------- */

static void echo_header(struct evhttp_request *req, const char *from, const char *to)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), from);
    evhttp_add_header(evhttp_request_get_output_headers(req), to, v ? v : "(none)");
}

static void reply_bytes(struct evhttp_request *req, size_t n)
{
    struct evbuffer *b = evbuffer_new();
    char *x = malloc(n);
    memset(x, 'x', n);
    evbuffer_add(b, x, n);
    free(x);
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void reply_chunked(struct evhttp_request *req)
{
    static char chunk[600 * 1024];
    memset(chunk, 'y', sizeof chunk);
    evhttp_send_reply_start(req, 200, "OK");
    for (int i = 0; i < 2; i++) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, chunk, sizeof chunk);
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
    }
    evhttp_send_reply_end(req);
}

static void serve(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *path = evhttp_request_get_uri(req);
    if (strncmp(path, "/echo", 5) == 0) {
        static const char *methods[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS",
                                        "TRACE", "CONNECT", "PATCH"};
        enum evhttp_cmd_type t = evhttp_request_get_command(req);
        int i = 0;
        while ((1 << i) != (int)t)
            i++;
        struct evkeyvalq *out = evhttp_request_get_output_headers(req);
        evhttp_add_header(out, "X-Method", methods[i]);
        evhttp_add_header(out, "X-Uri", path);
        echo_header(req, "X-Test", "X-Echo-Test");
        echo_header(req, "Host", "X-Echo-Host");
        echo_header(req, "Content-Length", "X-Echo-Length");
        echo_header(req, "Connection", "X-Echo-Connection");
        evhttp_send_reply(req, 200, "OK", evhttp_request_get_input_buffer(req));
    } else if (strcmp(path, "/status500") == 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "boom");
        evhttp_send_reply(req, 500, "Internal Server Error", b);
        evbuffer_free(b);
    } else if (strcmp(path, "/big") == 0) {
        reply_bytes(req, MIB + 1);
    } else if (strcmp(path, "/exact") == 0) {
        reply_bytes(req, MIB);
    } else if (strcmp(path, "/chunked") == 0) {
        reply_chunked(req);
    } else if (strcmp(path, "/hang") == 0) {
        hangs++; /* never answered; evhttp frees it when the client goes */
    } else {
        evhttp_send_error(req, 404, NULL);
    }
}

static struct bufferevent *tls_bev(struct event_base *b, void *arg)
{
    return bufferevent_openssl_socket_new(b, -1, SSL_new(arg), BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static int bound_port(evutil_socket_t fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    if (getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        return -1;
    return ntohs(sin.sin_port);
}

static struct evhttp *new_server(SSL_CTX *ctx, int *port)
{
    struct evhttp *h = evhttp_new(base);
    evhttp_set_gencb(h, serve, NULL);
    if (ctx)
        evhttp_set_bevcb(h, tls_bev, ctx);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(h, "127.0.0.1", 0);
    if (s == NULL)
        return NULL;
    *port = bound_port(evhttp_bound_socket_get_fd(s));
    return h;
}

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return NULL;
    return ctx;
}

static void hold_connection(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                            int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    if (nsilent < (int)(sizeof silent_fds / sizeof silent_fds[0]))
        silent_fds[nsilent++] = fd; /* never read: a TLS handshake stalls */
    else
        close(fd);
}

/* The raw server reads a request, answers with the canned bytes its path
 * names, and closes. */
static const struct {
    const char *path, *reply;
} canned[] = {
    {"/garbage", "NOT HTTP AT ALL\r\n\r\n"},
    {"/close", ""},
    {"/short", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"},
    {"/until-close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nread until close"},
    {"/twice", "HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nX-One: 1\r\nSet-Cookie: b=2\r\n"
               "Content-Length: 2\r\n\r\nok"},
};

static void raw_written(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_free(bev);
}

static void raw_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void raw_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    char *req = (char *)evbuffer_pullup(in, -1);
    if (req == NULL || evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0)
        return;
    const char *reply = "";
    for (size_t i = 0; i < sizeof canned / sizeof canned[0]; i++) {
        size_t pl = strlen(canned[i].path);
        if (n > 4 + pl && memcmp(req + 4, canned[i].path, pl) == 0 && req[4 + pl] == ' ')
            reply = canned[i].reply;
    }
    evbuffer_drain(in, n);
    if (*reply == '\0') {
        bufferevent_free(bev);
        return;
    }
    bufferevent_write(bev, reply, strlen(reply));
    bufferevent_setcb(bev, NULL, raw_written, raw_event, NULL);
}

static void raw_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                       int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, raw_read, NULL, raw_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0)
        return -1;
    int port = bound_port(fd);
    close(fd);
    return port;
}

static int make_cert(const char *cert, const char *key, const char *san)
{
    char cmd[768];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost "
             "-addext subjectAltName=%s -days 1 -keyout %s -out %s 2>/dev/null",
             san, key, cert);
    return system(cmd);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static int setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    unsetenv("SSL_CERT_FILE");
    unsetenv("SSL_CERT_DIR");
    snprintf(dir, sizeof dir, "/tmp/steeple-http-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(cert_a, sizeof cert_a, "%s/a.pem", dir);
    snprintf(key_a, sizeof key_a, "%s/a.key", dir);
    snprintf(cert_b, sizeof cert_b, "%s/b.pem", dir);
    snprintf(key_b, sizeof key_b, "%s/b.key", dir);
    if (make_cert(cert_a, key_a, "DNS:localhost,IP:127.0.0.1") != 0 ||
        make_cert(cert_b, key_b, "DNS:localhost") != 0)
        return -1;
    base = event_base_new();
    ctx_a = server_ctx(cert_a, key_a);
    ctx_b = server_ctx(cert_b, key_b);
    if (!base || !ctx_a || !ctx_b)
        return -1;
    srv_http = new_server(NULL, &port_http);
    srv_tls_a = new_server(ctx_a, &port_a);
    srv_tls_b = new_server(ctx_b, &port_b);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    silent = evconnlistener_new_bind(base, hold_connection, NULL,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                     (struct sockaddr *)&sin, sizeof sin);
    raw = evconnlistener_new_bind(base, raw_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                  16, (struct sockaddr *)&sin, sizeof sin);
    port_refused = free_port();
    if (!srv_http || !srv_tls_a || !srv_tls_b || !silent || !raw || port_refused < 0)
        return -1;
    port_silent = bound_port(evconnlistener_get_fd(silent));
    port_raw = bound_port(evconnlistener_get_fd(raw));
    char err[256];
    client_a = http_client_new(base, cert_a, err, sizeof err);
    client_b = http_client_new(base, cert_b, err, sizeof err);
    client_sys = http_client_new(base, NULL, err, sizeof err);
    ticker = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval tv = {0, 20000};
    if (!client_a || !client_b || !client_sys || !ticker || event_add(ticker, &tv) != 0) {
        printf("# setup: %s\n", err);
        return -1;
    }
    return 0;
}

static void teardown(void)
{
    http_client_free(client_a);
    http_client_free(client_b);
    http_client_free(client_sys);
    evhttp_free(srv_http);
    evhttp_free(srv_tls_a);
    evhttp_free(srv_tls_b);
    evconnlistener_free(silent);
    evconnlistener_free(raw);
    for (int i = 0; i < nsilent; i++)
        close(silent_fds[i]);
    event_free(ticker);
    for (int i = 0; i < 5; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
    SSL_CTX_free(ctx_a);
    SSL_CTX_free(ctx_b);
    const char *files[] = {cert_a, key_a, cert_b, key_b};
    for (int i = 0; i < 4; i++)
        unlink(files[i]);
    rmdir(dir);
}

/* ---- running calls -------------------------------------------------------- */

struct result {
    int calls;
    int status;
    char err[256];
    char *body;
    size_t body_len;
    int nheaders;
    char names[32][64], values[32][128];
};

static void done(void *arg, const struct http_response *res, const char *err)
{
    struct result *r = arg;
    r->calls++;
    if (err) {
        snprintf(r->err, sizeof r->err, "%s", err);
        return;
    }
    r->status = res->status;
    r->body = malloc(res->body_len + 1);
    memcpy(r->body, res->body, res->body_len + 1);
    r->body_len = res->body_len;
    for (size_t i = 0; i < res->nheaders && i < 32; i++, r->nheaders++) {
        snprintf(r->names[i], sizeof r->names[i], "%s", res->headers[i].name);
        snprintf(r->values[i], sizeof r->values[i], "%s", res->headers[i].value);
    }
}

static const char *header(const struct result *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->names[i], name) == 0)
            return r->values[i];
    return "";
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop for `seconds`, or until *flag is set. */
static void spin(double seconds, const int *flag)
{
    double end = now() + seconds;
    while (now() < end && (flag == NULL || *flag == 0))
        event_base_loop(base, EVLOOP_ONCE);
}

static struct http_request request(const char *method, const char *url)
{
    struct http_request req = {.method = method, .url = url, .connect_timeout_s = 3,
                               .timeout_s = 5};
    return req;
}

/* Makes the call, checks it does not answer from inside, waits for it and
 * lets libevent finish closing. Returns the seconds it took. */
static double run(struct http_client *c, const struct http_request *req, struct result *r)
{
    memset(r, 0, sizeof *r);
    double t0 = now();
    struct http_call *call = http_client_request(c, req, done, r);
    CHECK(call != NULL);
    CHECK(r->calls == 0);
    spin(10, &r->calls);
    double took = now() - t0;
    spin(0.05, NULL);
    CHECK(r->calls == 1);
    return took;
}

static void result_free(struct result *r)
{
    free(r->body);
    r->body = NULL;
}

static const char *url(const char *scheme, const char *host, int port, const char *path)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s://%s:%d%s", scheme, host, port, path);
    return buf[i];
}

/* ---- cases ---------------------------------------------------------------- */

static void post_echo(void)
{
    struct http_header h[] = {{"X-Test", "abc"}, {"Host", "evil.example"},
                              {"Content-Type", "text/plain"}};
    struct http_request req = request("POST", url("http", "127.0.0.1", port_http, "/echo?q=1"));
    req.headers = h;
    req.nheaders = 3;
    req.body = "hello";
    req.body_len = 5;
    struct result r;
    run(client_a, &req, &r);
    CHECK(r.status == 200);
    CHECK(r.body_len == 5 && r.body && memcmp(r.body, "hello", 5) == 0);
    CHECK(strcmp(header(&r, "X-Method"), "POST") == 0);
    CHECK(strcmp(header(&r, "X-Uri"), "/echo?q=1") == 0);
    CHECK(strcmp(header(&r, "X-Echo-Test"), "abc") == 0);
    char host[64];
    snprintf(host, sizeof host, "127.0.0.1:%d", port_http);
    CHECK(strcmp(header(&r, "X-Echo-Host"), host) == 0);
    CHECK(strcmp(header(&r, "X-Echo-Length"), "5") == 0);
    CHECK(strcmp(header(&r, "X-Echo-Connection"), "close") == 0);
    if (r.err[0])
        printf("# err: %s\n", r.err);
    result_free(&r);
}

static void get_by_name(void)
{
    struct http_request req = request("GET", url("http", "localhost", port_http, "/echo"));
    struct result r;
    run(client_a, &req, &r);
    if (r.err[0])
        printf("# err: %s\n", r.err);
    CHECK(r.status == 200 && r.body_len == 0 && r.body && r.body[0] == '\0');
    CHECK(strcmp(header(&r, "X-Method"), "GET") == 0);
    CHECK(strcmp(header(&r, "X-Echo-Length"), "(none)") == 0);
    result_free(&r);
}

static void head(void)
{
    struct http_request req = request("HEAD", url("http", "127.0.0.1", port_http, "/exact"));
    struct result r;
    run(client_a, &req, &r);
    CHECK(r.status == 200 && r.body_len == 0 && r.err[0] == '\0');
    CHECK(r.nheaders > 0);
    result_free(&r);
}

static void status_500(void)
{
    struct http_request req = request("GET", url("http", "127.0.0.1", port_http, "/status500"));
    struct result r;
    run(client_a, &req, &r);
    CHECK(r.status == 500 && r.err[0] == '\0');
    CHECK(r.body_len == 4 && r.body && strcmp(r.body, "boom") == 0);
    result_free(&r);
}

static void response_timeout(void)
{
    struct http_request req = request("GET", url("http", "127.0.0.1", port_http, "/hang"));
    req.timeout_s = 0.3;
    struct result r;
    double took = run(client_a, &req, &r);
    CHECK(strcmp(r.err, "timeout") == 0);
    CHECK(took >= 0.28 && took < 1.0);
    printf("# timeout after %.3f s\n", took);
}

static void connect_refused(void)
{
    struct http_request req = request("GET", url("http", "127.0.0.1", port_refused, "/"));
    struct result r;
    run(client_a, &req, &r);
    printf("# %s\n", r.err);
    CHECK(strcmp(r.err, "connect failed: Connection refused") == 0);
    req.url = url("https", "127.0.0.1", port_refused, "/");
    run(client_a, &req, &r);
    printf("# %s\n", r.err);
    CHECK(strcmp(r.err, "connect failed: Connection refused") == 0);
}

static void connect_timeout(void)
{
    struct http_request req = request("GET", url("https", "127.0.0.1", port_silent, "/"));
    req.connect_timeout_s = 0.3;
    struct result r;
    double took = run(client_a, &req, &r);
    printf("# %s after %.3f s\n", r.err, took);
    CHECK(strcmp(r.err, "connect failed: timeout") == 0);
    CHECK(took >= 0.28 && took < 1.0);
}

static void https_trusted(void)
{
    const char *hosts[] = {"localhost", "127.0.0.1"};
    for (int i = 0; i < 2; i++) {
        struct http_request req = request("PUT", url("https", hosts[i], port_a, "/echo"));
        req.body = "over tls";
        req.body_len = 8;
        struct result r;
        run(client_a, &req, &r);
        if (r.err[0])
            printf("# %s: %s\n", hosts[i], r.err);
        CHECK(r.status == 200 && r.body && strcmp(r.body, "over tls") == 0);
        CHECK(strcmp(header(&r, "X-Method"), "PUT") == 0);
        result_free(&r);
    }
}

static void https_untrusted(void)
{
    struct http_request req = request("GET", url("https", "127.0.0.1", port_a, "/echo"));
    struct result r;
    run(client_sys, &req, &r);
    printf("# %s\n", r.err);
    CHECK(strncmp(r.err, "tls: certificate verify failed: ", 32) == 0);
    CHECK(strstr(r.err, "self-signed") != NULL || strstr(r.err, "self signed") != NULL);
}

static void https_wrong_host(void)
{
    struct http_request req = request("GET", url("https", "127.0.0.1", port_b, "/echo"));
    struct result r;
    run(client_b, &req, &r);
    printf("# %s\n", r.err);
    CHECK(strcmp(r.err, "tls: certificate verify failed: IP address mismatch") == 0);
    req.url = url("https", "localhost", port_b, "/echo"); /* the same server, by its name */
    run(client_b, &req, &r);
    CHECK(r.status == 200 && r.err[0] == '\0');
    result_free(&r);
}

static void https_not_tls(void)
{
    struct http_request req = request("GET", url("https", "127.0.0.1", port_http, "/echo"));
    struct result r;
    run(client_a, &req, &r);
    printf("# %s\n", r.err);
    CHECK(strncmp(r.err, "tls: ", 5) == 0 || strncmp(r.err, "connect failed", 14) == 0);
}

static void too_large(void)
{
    const char *paths[] = {"/big", "/chunked"};
    for (int i = 0; i < 2; i++) {
        for (int tls = 0; tls < 2; tls++) {
            struct http_request req =
                request("GET", url(tls ? "https" : "http", "localhost",
                                   tls ? port_a : port_http, paths[i]));
            struct result r;
            run(client_a, &req, &r);
            if (strcmp(r.err, "response too large") != 0)
                printf("# %s over %s: %s\n", paths[i], tls ? "https" : "http", r.err);
            CHECK(strcmp(r.err, "response too large") == 0);
        }
    }
    struct http_request req = request("GET", url("http", "127.0.0.1", port_http, "/exact"));
    struct result r;
    run(client_a, &req, &r);
    CHECK(r.status == 200 && r.body_len == MIB);
    result_free(&r);
}

static void cancel(void)
{
    const char *urls[] = {url("http", "127.0.0.1", port_http, "/hang"),
                          url("https", "localhost", port_a, "/hang"),
                          url("https", "127.0.0.1", port_silent, "/"), "bad url"};
    for (int i = 0; i < 4; i++) {
        for (int wait = 0; wait < 2; wait++) {
            struct http_request req = request("POST", urls[i]);
            req.body = "x";
            req.body_len = 1;
            struct result r = {0};
            int seen = hangs;
            struct http_call *call = http_client_request(client_a, &req, done, &r);
            CHECK(call != NULL);
            if (wait)
                spin(0.1, NULL); /* connected and sent (or failed, not yet reported) */
            CHECK(hangs == seen + (wait && i < 2));
            if (!wait || r.calls == 0)
                http_call_cancel(call);
            spin(0.2, NULL);
            CHECK(r.calls == 0 || (wait && i == 3));
        }
    }
}

static void free_in_flight(void)
{
    char err[256];
    struct http_client *c = http_client_new(base, cert_a, err, sizeof err);
    CHECK(c != NULL);
    struct http_request req = request("GET", url("https", "localhost", port_a, "/hang"));
    struct result r = {0};
    CHECK(http_client_request(c, &req, done, &r) != NULL);
    CHECK(http_client_request(c, &req, done, &r) != NULL);
    spin(0.1, NULL);
    http_client_free(c);
    spin(0.1, NULL);
    CHECK(r.calls == 0);
    /* a name lookup in flight (the answer, whatever it is, comes later) */
    c = http_client_new(base, NULL, err, sizeof err);
    CHECK(c != NULL);
    req.url = "https://steeple-test.invalid/";
    CHECK(http_client_request(c, &req, done, &r) != NULL);
    req.url = "http://steeple-test.invalid/";
    CHECK(http_client_request(c, &req, done, &r) != NULL);
    http_client_free(c);
    spin(0.1, NULL);
    CHECK(r.calls == 0);
}

static void cancel_lookup(void)
{
    const char *urls[] = {"https://steeple-test.invalid/", "http://steeple-test.invalid/"};
    for (int i = 0; i < 2; i++) {
        struct http_request req = request("GET", urls[i]);
        struct result r = {0};
        struct http_call *call = http_client_request(client_a, &req, done, &r);
        CHECK(call != NULL);
        http_call_cancel(call);
        spin(0.1, NULL);
        CHECK(r.calls == 0);
    }
}

static void bad_input(void)
{
    const char *bad_urls[] = {"ftp://localhost/", "not a url", "http://", "http:///x",
                              "http://user@localhost/", "http://localhost:0/",
                              "http://[::1/", NULL};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        struct http_request req = request("GET", bad_urls[i]);
        struct result r;
        run(client_a, &req, &r);
        if (strcmp(r.err, "bad url") != 0)
            printf("# %s: %s\n", bad_urls[i] ? bad_urls[i] : "NULL", r.err);
        CHECK(strcmp(r.err, "bad url") == 0);
    }
    struct http_request req = request("FETCH", url("http", "127.0.0.1", port_http, "/echo"));
    struct result r;
    run(client_a, &req, &r);
    CHECK(strcmp(r.err, "bad method") == 0);
    struct http_header h[] = {{"X-Ok", "fine"}, {"X-Bad", "a\r\nInjected: yes"}};
    req.method = "GET";
    req.headers = h;
    req.nheaders = 2;
    run(client_a, &req, &r);
    CHECK(strcmp(r.err, "bad header") == 0);
    h[1].name = "Bad Name";
    h[1].value = "v";
    run(client_a, &req, &r);
    CHECK(strcmp(r.err, "bad header") == 0);
    CHECK(http_method_valid("PATCH") && !http_method_valid("get") && !http_method_valid(NULL));
}

static void ipv6_literal_url(void)
{
    /* nothing listens on [::1]: the url must parse and the connect fail */
    struct http_request req = request("GET", url("http", "[::1]", port_refused, "/"));
    struct result r;
    run(client_a, &req, &r);
    printf("# %s\n", r.err);
    CHECK(strncmp(r.err, "connect failed", 14) == 0);
}

static void odd_servers(void)
{
    const struct {
        const char *path, *err;
    } bad[] = {
        {"/garbage", "bad response"}, {"/close", "connection closed"},
        {"/short", "connection closed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct http_request req = request("GET", url("http", "127.0.0.1", port_raw, bad[i].path));
        struct result r;
        run(client_a, &req, &r);
        if (strcmp(r.err, bad[i].err) != 0)
            printf("# %s: %s\n", bad[i].path, r.err);
        CHECK(strcmp(r.err, bad[i].err) == 0);
        result_free(&r);
    }
    struct http_request req = request("GET", url("http", "127.0.0.1", port_raw, "/until-close"));
    struct result r;
    run(client_a, &req, &r);
    CHECK(r.status == 200 && r.body && strcmp(r.body, "read until close") == 0);
    result_free(&r);
    req.url = url("http", "127.0.0.1", port_raw, "/twice");
    run(client_a, &req, &r);
    CHECK(r.status == 201 && r.nheaders == 4);
    CHECK(strcmp(r.names[0], "Set-Cookie") == 0 && strcmp(r.values[0], "a=1") == 0);
    CHECK(strcmp(r.names[2], "Set-Cookie") == 0 && strcmp(r.values[2], "b=2") == 0);
    result_free(&r);
}

static const struct tap_case cases[] = {
    {"POST with body and headers is echoed (http)", post_echo},
    {"GET by host name through the resolver", get_by_name},
    {"status 500 is passed through", status_500},
    {"HEAD: headers, no body", head},
    {"a server that never answers gives \"timeout\"", response_timeout},
    {"a refused connect gives \"connect failed\"", connect_refused},
    {"a stalled TLS handshake gives \"connect failed: timeout\"", connect_timeout},
    {"https with the certificate trusted: 200", https_trusted},
    {"https with an untrusted certificate: verify failed", https_untrusted},
    {"https to an IP the certificate does not name: verify failed", https_wrong_host},
    {"https to a plain http server fails", https_not_tls},
    {"a body over 1 MiB gives \"response too large\"", too_large},
    {"a cancelled call never calls back", cancel},
    {"freeing the client cancels calls in flight", free_in_flight},
    {"a call cancelled during its name lookup", cancel_lookup},
    {"bad url, method and header are reported from the loop", bad_input},
    {"an IPv6 literal url", ipv6_literal_url},
    {"garbage, early close, short body, read-until-close, repeated headers", odd_servers},
};

int main(void)
{
    if (setup() != 0) {
        printf("1..0 # SKIP cannot set up the test servers\n");
        return 1;
    }
    int rc = tap_run(cases, (int)(sizeof cases / sizeof cases[0]));
    teardown();
    return rc;
}
