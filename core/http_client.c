/* http_client.c — outbound HTTP/HTTPS calls on evhttp (see http_client.h).
 *
 * A call's life: start() parses the url and builds a connection (a plain or
 * an OpenSSL bufferevent handed to evhttp, which resolves the name on the
 * client's evdns_base) and the request. Whatever ends the call first — the
 * response, an error, one of its two timers — calls complete(), which
 * records the outcome and activates the call's `finish` event. on_finish
 * runs from the loop, outside every evhttp callback: it frees the
 * connection, then runs the user's callback, then frees the call. evhttp
 * frees the evhttp_request itself once on_response returns (or with the
 * connection), so nothing here keeps a pointer to it.
 *
 * libevent 2.1 ends a failed call in one of two shapes:
 *  - a refused connect (and evhttp's own connect timeout, which ours always
 *    beats): the request callback with the request and status 0, and no
 *    error callback;
 *  - anything else: the error callback, then the request callback with
 *    NULL; errno is restored for both.
 * The cause is pieced together from what the call saw: the verify
 * callback's first error, the bufferevent's DNS and OpenSSL errors, whether
 * evhttp ever had the connection up (its close callback fires only then)
 * and the error callback's code. */
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

struct http_client {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *tls;
    LIST_HEAD(, http_call) calls; /* started and not yet finished or cancelled */
};

struct http_call {
    struct http_client *client;
    LIST_ENTRY(http_call) link; /* in client->calls */
    http_done_cb cb;
    void *arg;
    struct evhttp_connection *evcon; /* owns bev, which owns ssl */
    struct bufferevent *bev;
    SSL *ssl; /* NULL for plain http */
    struct event *connect_timer, *deadline, *finish;
    int done;         /* complete() ran; on_finish is pending */
    int up;           /* evhttp had the connection established */
    int ev_error;     /* the error callback's code, or -1 */
    int ev_errno;     /* errno when it ran */
    long verify_error; /* the first certificate error, or X509_V_OK */
    char err[256];     /* the failure, or "" */
    int status;
    struct evbuffer *body; /* NUL-terminated once complete */
    struct http_header *headers; /* one block with their text */
    size_t nheaders;
};

/* Where a url points. Strings are owned (target_free). */
struct target {
    int https;
    int port;
    char *addr; /* to connect to and verify: name or IP, no brackets */
    char *host; /* the Host header */
    char *path; /* path?query, at least "/" */
};

static const struct {
    const char *name;
    enum evhttp_cmd_type type;
} methods[] = {
    {"GET", EVHTTP_REQ_GET},         {"POST", EVHTTP_REQ_POST},   {"HEAD", EVHTTP_REQ_HEAD},
    {"PUT", EVHTTP_REQ_PUT},         {"DELETE", EVHTTP_REQ_DELETE},
    {"OPTIONS", EVHTTP_REQ_OPTIONS}, {"PATCH", EVHTTP_REQ_PATCH},
};

static void on_finish(evutil_socket_t fd, short what, void *p);

static double clamp_seconds(double s)
{
    return s > 0 && s < 86400 ? s : 86400; /* also maps NaN to a day */
}

/* s: seconds, as clamp_seconds() returns them (+1 at most) */
static struct timeval to_timeval(double s)
{
    struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    return tv;
}

/* ---- urls and headers ---------------------------------------------------- */

static int method_type(const char *method, enum evhttp_cmd_type *type)
{
    for (size_t i = 0; method && i < sizeof methods / sizeof methods[0]; i++)
        if (strcmp(method, methods[i].name) == 0) {
            *type = methods[i].type;
            return 1;
        }
    return 0;
}

int http_method_valid(const char *method)
{
    enum evhttp_cmd_type type;
    return method_type(method, &type);
}

static void target_free(struct target *t)
{
    free(t->addr);
    free(t->host);
    free(t->path);
}

/* host as the url gave it, IPv6 literals in brackets. Returns 0, or -1. */
static int fill_host(struct target *t, const char *host, int port_given)
{
    size_t len = strlen(host);
    if (host[0] == '[') {
        if (len < 3 || host[len - 1] != ']')
            return -1;
        t->addr = strndup(host + 1, len - 2);
    } else {
        t->addr = strdup(host);
    }
    size_t n = len + 8;
    t->host = malloc(n);
    if (t->addr == NULL || t->host == NULL)
        return -1;
    if (port_given)
        snprintf(t->host, n, "%s:%d", host, t->port);
    else
        snprintf(t->host, n, "%s", host);
    return 0;
}

static int fill_path(struct target *t, const char *path, const char *query)
{
    if (path == NULL || *path == '\0')
        path = "/";
    size_t n = strlen(path) + (query ? strlen(query) + 1 : 0) + 1;
    t->path = malloc(n);
    if (t->path == NULL)
        return -1;
    snprintf(t->path, n, "%s%s%s", path, query ? "?" : "", query ? query : "");
    return 0;
}

static int fill_target(const struct evhttp_uri *u, struct target *t)
{
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    if (scheme == NULL || host == NULL || *host == '\0' || evhttp_uri_get_userinfo(u))
        return -1;
    if (strcasecmp(scheme, "https") == 0)
        t->https = 1;
    else if (strcasecmp(scheme, "http") != 0)
        return -1;
    int dflt = t->https ? 443 : 80, port = evhttp_uri_get_port(u);
    if (port == 0 || port > 65535)
        return -1;
    t->port = port < 0 ? dflt : port;
    if (fill_host(t, host, port > 0 && port != dflt) != 0)
        return -1;
    return fill_path(t, evhttp_uri_get_path(u), evhttp_uri_get_query(u));
}

/* Returns 0 with *t filled, or -1. */
static int parse_url(const char *url, struct target *t)
{
    memset(t, 0, sizeof *t);
    struct evhttp_uri *u = url ? evhttp_uri_parse_with_flags(url, 0) : NULL;
    if (u == NULL)
        return -1;
    int rc = fill_target(u, t);
    evhttp_uri_free(u);
    if (rc != 0)
        target_free(t);
    return rc;
}

static int is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* RFC 9110 field-name (a token) and field-value (no CR, LF or controls but
 * tab). */
static int header_valid(const char *name, const char *value)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    if (name == NULL || value == NULL || *name == '\0')
        return 0;
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z') || strchr(tchar, *s)))
            return 0;
    for (const unsigned char *s = (const unsigned char *)value; *s; s++)
        if ((*s < 0x20 && *s != '\t') || *s == 0x7f)
            return 0;
    return 1;
}

static int header_reserved(const char *name)
{
    return strcasecmp(name, "Host") == 0 || strcasecmp(name, "Content-Length") == 0 ||
           strcasecmp(name, "Connection") == 0 || strcasecmp(name, "Transfer-Encoding") == 0;
}

/* ---- TLS ------------------------------------------------------------------ */

/* Keeps the first certificate error of the call the SSL belongs to. */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
    if (ok)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct http_call *call = ssl ? SSL_get_app_data(ssl) : NULL;
    if (call != NULL && call->verify_error == X509_V_OK)
        call->verify_error = X509_STORE_CTX_get_error(store);
    return ok;
}

static SSL_CTX *tls_context(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "tls: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        const char *why = ERR_reason_error_string(ERR_peek_last_error());
        snprintf(err, errlen, "tls: cannot load %s: %s", ca_file ? ca_file : "the default CAs",
                 why ? why : "unknown error");
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* An SSL for one call to addr: SNI and host name check for a name, an IP
 * check for an address literal. Returns NULL on failure. */
static SSL *tls_session(struct http_call *call, const char *addr)
{
    SSL *ssl = SSL_new(call->client->tls);
    if (ssl == NULL)
        return NULL;
    SSL_set_app_data(ssl, call);
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = is_ip_literal(addr)
                 ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), addr)
                 : SSL_set_tlsext_host_name(ssl, addr) == 1 && SSL_set1_host(ssl, addr) == 1;
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* The earliest real OpenSSL error the bufferevent kept, or 0. (It also keeps
 * SSL_get_error() codes, whose library is 0.) */
static unsigned long tls_error(struct http_call *call)
{
    unsigned long e, found = 0;
    if (call->ssl == NULL)
        return 0;
    while ((e = bufferevent_get_openssl_error(call->bev)) != 0)
        if (ERR_GET_LIB(e) != 0)
            found = e;
    return found;
}

/* ---- the call's outcome ---------------------------------------------------- */

/* Records the outcome (err NULL: success) and schedules on_finish. Only the
 * first outcome counts. */
static void complete(struct http_call *call, const char *err)
{
    if (call->done)
        return;
    call->done = 1;
    if (err != NULL)
        snprintf(call->err, sizeof call->err, "%s", *err ? err : "failed");
    event_del(call->connect_timer);
    event_del(call->deadline);
    event_active(call->finish, EV_TIMEOUT, 1);
}

static void describe_connect_failure(struct http_call *call, int err_cb_ran, char *buf,
                                     size_t n)
{
    unsigned long tls = tls_error(call);
    int e = err_cb_ran ? call->ev_errno : ECONNREFUSED; /* see the top of the file */
    if (tls != 0 && ERR_GET_LIB(tls) == ERR_LIB_SYS)
        e = ERR_GET_REASON(tls);
    else if (tls != 0) {
        const char *why = ERR_reason_error_string(tls);
        snprintf(buf, n, "tls: %s", why ? why : "handshake failed");
        return;
    }
    if (e != 0)
        snprintf(buf, n, "connect failed: %s", strerror(e));
    else
        snprintf(buf, n, "connect failed");
}

/* Why the call failed, from what it saw (see the top of the file). */
static void describe_failure(struct http_call *call, char *buf, size_t n)
{
    int dns = call->bev ? bufferevent_socket_get_dns_error(call->bev) : 0;
    if (call->ev_error == EVREQ_HTTP_DATA_TOO_LONG)
        snprintf(buf, n, "response too large");
    else if (call->ev_error == EVREQ_HTTP_TIMEOUT)
        snprintf(buf, n, "timeout");
    else if (call->verify_error != X509_V_OK)
        snprintf(buf, n, "tls: certificate verify failed: %s",
                 X509_verify_cert_error_string(call->verify_error));
    else if (dns != 0)
        snprintf(buf, n, "dns: %s", evutil_gai_strerror(dns));
    else if (!call->up)
        describe_connect_failure(call, call->ev_error >= 0, buf, n);
    else if (call->ev_error == EVREQ_HTTP_INVALID_HEADER)
        snprintf(buf, n, "bad response");
    else {
        unsigned long tls = tls_error(call);
        const char *why = tls && ERR_GET_LIB(tls) != ERR_LIB_SYS ? ERR_reason_error_string(tls)
                                                                 : NULL;
        if (why)
            snprintf(buf, n, "tls: %s", why);
        else
            snprintf(buf, n, "connection closed");
    }
}

/* Copies the response headers into one block. Returns 0, or -1. */
static int copy_headers(struct http_call *call, const struct evkeyvalq *in)
{
    size_t n = 0, text = 0;
    for (const struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next) {
        n++;
        text += strlen(h->key) + strlen(h->value) + 2;
    }
    char *block = malloc(n * sizeof(struct http_header) + text + 1);
    if (block == NULL)
        return -1;
    struct http_header *out = (struct http_header *)(void *)block;
    char *p = block + n * sizeof(struct http_header);
    size_t i = 0;
    for (const struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next, i++) {
        size_t kl = strlen(h->key) + 1, vl = strlen(h->value) + 1;
        out[i].name = memcpy(p, h->key, kl);
        out[i].value = memcpy(p + kl, h->value, vl);
        p += kl + vl;
    }
    call->headers = out;
    call->nheaders = n;
    return 0;
}

/* Takes status, headers and body out of req before evhttp frees it. */
static int take_response(struct http_call *call, struct evhttp_request *req)
{
    call->status = evhttp_request_get_response_code(req);
    if (copy_headers(call, evhttp_request_get_input_headers(req)) != 0)
        return -1;
    if (evbuffer_add_buffer(call->body, evhttp_request_get_input_buffer(req)) != 0 ||
        evbuffer_add(call->body, "", 1) != 0 || evbuffer_pullup(call->body, -1) == NULL)
        return -1;
    return 0;
}

/* ---- evhttp and timer callbacks -------------------------------------------- */

static void on_response(struct evhttp_request *req, void *p)
{
    struct http_call *call = p;
    if (call->done)
        return;
    if (req == NULL || evhttp_request_get_response_code(req) == 0) {
        char why[sizeof call->err];
        describe_failure(call, why, sizeof why);
        complete(call, why);
        return;
    }
    complete(call, take_response(call, req) == 0 ? NULL : "out of memory");
}

static void on_error(enum evhttp_request_error error, void *p)
{
    struct http_call *call = p;
    if (call->ev_error < 0) {
        call->ev_error = (int)error;
        call->ev_errno = errno;
    }
}

/* evhttp calls this only for a connection it had established. */
static void on_close(struct evhttp_connection *evcon, void *p)
{
    (void)evcon;
    struct http_call *call = p;
    call->up = 1;
}

/* 1 when TCP (and TLS, for https) is established. */
static int connection_up(const struct http_call *call)
{
    if (call->up)
        return 1;
    int fd = call->bev ? (int)bufferevent_getfd(call->bev) : -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    return call->ssl == NULL || SSL_is_init_finished(call->ssl);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    (void)what;
    struct http_call *call = p;
    if (!connection_up(call))
        complete(call, "connect failed: timeout");
}

static void on_deadline(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    (void)what;
    complete(p, "timeout");
}

/* ---- starting a call ------------------------------------------------------- */

static struct bufferevent *new_bufferevent(struct http_call *call, const struct target *t)
{
    struct event_base *base = call->client->base;
    int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (!t->https)
        return bufferevent_socket_new(base, -1, opts);
    call->ssl = tls_session(call, t->addr);
    if (call->ssl == NULL)
        return NULL;
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(base, -1, call->ssl, BUFFEREVENT_SSL_CONNECTING, opts);
    if (bev == NULL) { /* whether libevent freed the SSL varies: leak it rather */
        call->ssl = NULL;
        return NULL;
    }
    /* many servers close without close_notify after "Connection: close" */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

/* Sets up call->evcon for t. Returns NULL, or the failure. */
static const char *open_connection(struct http_call *call, const struct target *t,
                                   double timeout_s)
{
    call->bev = new_bufferevent(call, t);
    if (call->bev == NULL)
        return t->https ? "tls: cannot set up the session" : "out of memory";
    call->evcon = evhttp_connection_base_bufferevent_new(call->client->base, call->client->dns,
                                                         call->bev, t->addr,
                                                         (unsigned short)t->port);
    if (call->evcon == NULL) { /* then the bufferevent is still ours */
        bufferevent_free(call->bev);
        call->bev = NULL;
        call->ssl = NULL;
        return "out of memory";
    }
    /* evhttp's own timers (connect, read, write) stay behind ours */
    struct timeval tv = to_timeval(clamp_seconds(timeout_s) + 1);
    evhttp_connection_set_timeout_tv(call->evcon, &tv);
    evhttp_connection_set_retries(call->evcon, 0);
    evhttp_connection_set_max_body_size(call->evcon, HTTP_CLIENT_MAX_BODY);
    evhttp_connection_set_max_headers_size(call->evcon, HTTP_CLIENT_MAX_HEADERS);
    evhttp_connection_set_closecb(call->evcon, on_close, call);
    return NULL;
}

static const char *add_headers(struct evhttp_request *r, const struct http_request *req,
                               const struct target *t, enum evhttp_cmd_type type)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(r);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (!header_valid(h->name, h->value))
            return "bad header";
        if (!header_reserved(h->name) && evhttp_add_header(out, h->name, h->value) != 0)
            return "bad header";
    }
    char len[24];
    snprintf(len, sizeof len, "%zu", req->body_len);
    int with_length = req->body_len > 0 || type == EVHTTP_REQ_POST ||
                      type == EVHTTP_REQ_PUT || type == EVHTTP_REQ_PATCH;
    if (evhttp_add_header(out, "Host", t->host) != 0 ||
        evhttp_add_header(out, "Connection", "close") != 0 ||
        (with_length && evhttp_add_header(out, "Content-Length", len) != 0))
        return "out of memory";
    return NULL;
}

/* Hands the request to evhttp. Returns NULL, or the failure. */
static const char *send_request(struct http_call *call, const struct http_request *req,
                                const struct target *t, enum evhttp_cmd_type type)
{
    struct evhttp_request *r = evhttp_request_new(on_response, call);
    if (r == NULL)
        return "out of memory";
    evhttp_request_set_error_cb(r, on_error);
    const char *err = add_headers(r, req, t, type);
    if (err == NULL && req->body_len > 0 &&
        evbuffer_add(evhttp_request_get_output_buffer(r), req->body, req->body_len) != 0)
        err = "out of memory";
    if (err != NULL) {
        evhttp_request_free(r);
        return err;
    }
    /* from here evhttp owns r; it may even report a failure before returning */
    if (evhttp_make_request(call->evcon, r, type, t->path) != 0)
        return "connect failed";
    return NULL;
}

static const char *start(struct http_call *call, const struct http_request *req)
{
    enum evhttp_cmd_type type;
    struct target t;
    if (!method_type(req->method, &type))
        return "bad method";
    if (req->body_len > 0 && req->body == NULL)
        return "bad body";
    if (parse_url(req->url, &t) != 0)
        return "bad url";
    const char *err = open_connection(call, &t, req->timeout_s);
    if (err == NULL)
        err = send_request(call, req, &t, type);
    target_free(&t);
    return err;
}

/* ---- the call's end --------------------------------------------------------- */

/* Frees the connection, the request it still holds, and the SSL, without
 * any evhttp callback reaching the call again (the close callback may). */
static void drop_connection(struct http_call *call)
{
    if (call->ssl)
        SSL_set_app_data(call->ssl, NULL); /* the SSL may outlive us briefly */
    if (call->evcon)
        evhttp_connection_free(call->evcon);
    call->evcon = NULL;
    call->bev = NULL;
    call->ssl = NULL;
}

static void call_free(struct http_call *call)
{
    struct event *evs[] = {call->connect_timer, call->deadline, call->finish};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    if (call->body)
        evbuffer_free(call->body);
    free(call->headers);
    free(call);
}

static void on_finish(evutil_socket_t fd, short what, void *p)
{
    (void)fd;
    (void)what;
    struct http_call *call = p;
    LIST_REMOVE(call, link);
    drop_connection(call);
    if (call->err[0] != '\0') {
        call->cb(call->arg, NULL, call->err);
    } else {
        struct http_response res = {
            .status = call->status,
            .headers = call->headers,
            .nheaders = call->nheaders,
            .body = (const char *)evbuffer_pullup(call->body, -1),
            .body_len = evbuffer_get_length(call->body) - 1, /* the NUL */
        };
        call->cb(call->arg, &res, NULL);
    }
    call_free(call); /* the callback may have freed the client: not touched */
}

/* ---- API ------------------------------------------------------------------ */

struct http_client *http_client_new(struct event_base *base, const char *ca_file, char *err,
                                    size_t errlen)
{
    struct http_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->base = base;
    LIST_INIT(&c->calls);
    c->tls = tls_context(ca_file, err, errlen);
    if (c->tls == NULL) {
        free(c);
        return NULL;
    }
    c->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                      EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (c->dns == NULL) {
        snprintf(err, errlen, "dns: cannot set up the resolver");
        SSL_CTX_free(c->tls);
        free(c);
        return NULL;
    }
    return c;
}

static struct http_call *new_call(struct http_client *c, const struct http_request *req,
                                  http_done_cb cb, void *arg)
{
    struct http_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return NULL;
    call->client = c;
    call->cb = cb;
    call->arg = arg;
    call->ev_error = -1;
    call->verify_error = X509_V_OK;
    call->connect_timer = evtimer_new(c->base, on_connect_timeout, call);
    call->deadline = evtimer_new(c->base, on_deadline, call);
    call->finish = event_new(c->base, -1, 0, on_finish, call);
    call->body = evbuffer_new();
    struct timeval ctv = to_timeval(clamp_seconds(req->connect_timeout_s));
    struct timeval tv = to_timeval(clamp_seconds(req->timeout_s));
    if (!call->connect_timer || !call->deadline || !call->finish || !call->body ||
        evtimer_add(call->deadline, &tv) != 0 ||
        (clamp_seconds(req->connect_timeout_s) < clamp_seconds(req->timeout_s) &&
         evtimer_add(call->connect_timer, &ctv) != 0)) {
        call_free(call);
        return NULL;
    }
    return call;
}

struct http_call *http_client_request(struct http_client *c, const struct http_request *req,
                                      http_done_cb cb, void *arg)
{
    struct http_call *call = new_call(c, req, cb, arg);
    if (call == NULL)
        return NULL;
    LIST_INSERT_HEAD(&c->calls, call, link);
    const char *err = start(call, req);
    if (err != NULL)
        complete(call, err); /* reported from the loop, never from here */
    return call;
}

void http_call_cancel(struct http_call *call)
{
    if (call == NULL)
        return;
    LIST_REMOVE(call, link);
    drop_connection(call);
    call_free(call);
}

void http_client_free(struct http_client *c)
{
    if (c == NULL)
        return;
    while (!LIST_EMPTY(&c->calls))
        http_call_cancel(LIST_FIRST(&c->calls));
    evdns_base_free(c->dns, 1); /* ends lookups in flight: see the header */
    SSL_CTX_free(c->tls);
    free(c);
}
