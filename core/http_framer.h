/* http_framer.h — where each HTTP/1.1 request on a connection begins and ends.
 *
 * libevent 2.1.12's evhttp reads request bodies itself and answers a body or a
 * header block over its limits with an HTML page of its own: it has no error
 * callback (evhttp_set_errorcb is 2.2), and a server request reaches user code
 * only once its body has been read (evhttp_set_newreqcb, the one way to put a
 * header or chunk callback on a server request, is 2.2 too). Even with those,
 * evhttp checks a declared chunk size against its limit before any callback
 * sees it. So every byte a client sends passes through a framer before evhttp
 * sees it (core/http_conn.c does the plumbing). The framer finds each
 * request's header block, decides how its body is framed (Content-Length or
 * chunked), reads and decodes the body itself within that request's limit,
 * and only then hands evhttp the header block without its framing headers:
 * evhttp parses and dispatches a request that has no body, and never frames
 * one itself, so the two can never disagree on where a request ends.
 *
 * A request it refuses (a header block over the limit or framing it cannot
 * trust: 400; a body over its limit: 413) is handed over all the same,
 * marked, so that its answer takes the usual path; every later byte of that
 * connection is dropped, and the answer must close it. Memory: a header block
 * is held up to the header limit and a body up to its limit, plus what one
 * read added. Free of evhttp's request API and of Lua. */
#ifndef STEEPLE_HTTP_FRAMER_H
#define STEEPLE_HTTP_FRAMER_H

#include <stddef.h>

struct evbuffer;
struct http_framer;

/* The limits a framer applies; owned by its creator, read at each use. */
struct http_framer_limits {
    long header_bytes; /* the request line and header lines, line ends included */
    long body_bytes;   /* a body's limit unless body_limit chooses another */
};

/* The largest body to accept for a request whose header block is complete;
 * called once for each request that has a body. method and target are the
 * first two words of its request line, not NUL-terminated. A result <= 0
 * means limits->body_bytes. */
typedef long (*http_body_limit_fn)(void *arg, const char *method, size_t method_len,
                                   const char *target, size_t target_len);

enum http_framer_status {
    HTTP_FRAMER_MORE,     /* nothing to hand over: wants more bytes */
    HTTP_FRAMER_CONTINUE, /* the client waits for "100 Continue" before its body */
    HTTP_FRAMER_REQUEST,  /* a header block was appended to out: hand it to evhttp */
    HTTP_FRAMER_ERROR,    /* out of memory: the connection should be closed */
};

/* Returns a framer waiting for a request, or NULL when out of memory.
 * body_limit may be NULL. */
struct http_framer *http_framer_new(const struct http_framer_limits *limits,
                                    http_body_limit_fn body_limit, void *arg)
    __attribute__((warn_unused_result));
void http_framer_free(struct http_framer *f);

/* Reads from the front of `in` what the current request needs (the rest
 * stays there) and appends a complete request's header block to `out`.
 * After HTTP_FRAMER_REQUEST it reads nothing more until http_framer_next();
 * after a refusal it drains whatever `in` holds, now and later. */
enum http_framer_status http_framer_read(struct http_framer *f, struct evbuffer *in,
                                         struct evbuffer *out);

/* For the request handed over: 0 to serve it, or the status to refuse it
 * with, 400 or 413. */
int http_framer_refused(const struct http_framer *f);

/* Why a request was refused (a constant string), or NULL. */
const char *http_framer_why(const struct http_framer *f);

/* The decoded body of the request handed over; the caller may drain it. */
struct evbuffer *http_framer_body(struct http_framer *f);

/* 1 from handing a request over until http_framer_next(), and after a refusal. */
int http_framer_holding(const struct http_framer *f);

/* The request handed over has been answered: the next read frames the next
 * one. A framer that refused one stays as it is (the connection closes). */
void http_framer_next(struct http_framer *f);

#endif
