/* http_client.h — asynchronous outbound HTTP/1.1 and HTTPS on libevent.
 *
 * One client per worker, on the worker's event_base: it owns an evdns_base
 * and a TLS context (TLS 1.2 or later, peer and host name verification on).
 * Every call gets its own connection, sends "Connection: close" and ends
 * with exactly one callback on the loop thread, never from inside the call
 * that started it. A call the requester abandons is cancelled: its callback
 * never comes. */
#ifndef STEEPLE_HTTP_CLIENT_H
#define STEEPLE_HTTP_CLIENT_H

#include <stddef.h>

struct event_base;
struct http_client;
struct http_call;

/* The largest response body accepted; a longer one fails the call with
 * "response too large" (so do response headers over HTTP_CLIENT_MAX_HEADERS). */
#define HTTP_CLIENT_MAX_BODY (1024 * 1024)
#define HTTP_CLIENT_MAX_HEADERS (64 * 1024)

struct http_header {
    const char *name;
    const char *value;
};

struct http_request {
    const char *method; /* "GET", "POST", ...: see http_method_valid() */
    const char *url;    /* http[s]://host[:port][/path][?query]; no user info */
    /* Host, Content-Length, Connection and Transfer-Encoding are the client's
     * own: entries with those names are ignored. */
    const struct http_header *headers;
    size_t nheaders;
    const char *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    double connect_timeout_s; /* DNS, TCP and the TLS handshake; > 0 */
    double timeout_s;         /* the whole call, from its start; > 0 */
};

struct http_response {
    int status;
    const struct http_header *headers; /* as received, in order */
    size_t nheaders;
    const char *body; /* body_len bytes, followed by a NUL */
    size_t body_len;
};

/* Called once per call that is not cancelled. On success err is NULL and
 * res holds the answer, whatever its status; on failure res is NULL and err
 * is a short text: "bad url", "bad method", "bad header", "bad body", "dns: …",
 * "connect failed: …" (the request was not sent; "connect failed: timeout"
 * when connect_timeout_s passed), "tls: certificate verify failed: …",
 * "tls: …", "timeout" (timeout_s passed), "response too large",
 * "bad response", "connection closed", "out of memory". res, err and
 * everything they point to are valid only during the callback. The call
 * handle is no longer valid once the callback runs. */
typedef void (*http_done_cb)(void *arg, const struct http_response *res, const char *err);

/* Creates a client on base. ca_file names a PEM file of trusted certificates
 * that replaces the defaults; NULL uses OpenSSL's default paths, which honour
 * SSL_CERT_FILE and SSL_CERT_DIR. Returns the client, or NULL with a message
 * in err. */
struct http_client *http_client_new(struct event_base *base, const char *ca_file, char *err,
                                    size_t errlen) __attribute__((warn_unused_result));

/* Starts a call; the client copies everything it needs from req before this
 * returns. cb(arg, …) runs once, later, from the loop (invalid input, such
 * as a bad url, is reported that way too). Returns the call handle, or NULL
 * if it could not be started for lack of memory; then cb never runs. */
struct http_call *http_client_request(struct http_client *c, const struct http_request *req,
                                      http_done_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* Abandons a call whose callback has not run: the callback never runs and
 * the call's connection, request and memory are released at once (libevent
 * may finish closing the socket on a later loop iteration). After this the
 * handle is no longer valid. Safe from any callback but the call's own. */
void http_call_cancel(struct http_call *call);

/* Cancels every call still in flight (their callbacks never run) and frees
 * the client; it may be called from one of its callbacks. Name lookups in
 * flight are failed: libevent releases their last memory on the loop's next
 * iteration, so run the loop once more (EVLOOP_NONBLOCK) before
 * event_base_free() to leave nothing behind. */
void http_client_free(struct http_client *c);

/* 1 when method (case-sensitive, e.g. "PATCH") is one the client can send. */
int http_method_valid(const char *method);

#endif
