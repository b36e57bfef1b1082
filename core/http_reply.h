/* http_reply.h — evhttp helpers: responses, request ids, method names.
 * Free of Lua. */
#ifndef STEEPLE_HTTP_REPLY_H
#define STEEPLE_HTTP_REPLY_H

#include <stddef.h>

struct evhttp_request;

/* Longest request id we echo (API.md). */
#define REQUEST_ID_MAX 64

struct http_reply {
    int status;
    const char *body; /* not owned; NULL = empty */
    size_t body_len;
    /* "Name: value\n" lines (not owned), already validated, or NULL */
    const char *headers;
    size_t headers_len;
    const char *route;  /* route pattern for logs and metrics, or NULL */
    const char *tenant; /* tenant id for the access log, or NULL */
    char error_body[256];
};

/* Sends the reply with X-Request-Id (and Connection: close when `closing`).
 * Returns 0, or -1 when evhttp refused a header (the reply is then a bare
 * 500). The request belongs to evhttp afterwards. */
int http_reply_send(struct evhttp_request *req, const struct http_reply *reply,
                    const char *request_id, int closing) __attribute__((warn_unused_result));

/* Fills a reply with API.md's generic error body for `code`. */
void http_reply_error(struct http_reply *reply, int status, const char *code,
                      const char *request_id);

/* Checks a "Name: value\n" header block: token names, no CR/LF/NUL in values.
 * Returns NULL when valid, else what is wrong. */
const char *http_headers_check(const char *blob, size_t len);

/* Echoes a well-formed X-Request-Id (1..64 of [A-Za-z0-9._-]) or makes a new
 * one, into out (REQUEST_ID_MAX + 1 bytes). req may be NULL (a new id). */
void http_request_id(struct evhttp_request *req, char *out);
/* Draws a new random prefix for request ids: call in each worker after fork. */
void http_request_ids_init(void);
int http_request_id_valid(const char *id);

const char *http_method_name(int evhttp_cmd);
const char *http_reason(int status);

/* Answers the benchmark-only plain C route when the path matches exactly;
 * returns 1 if it did. */
int http_plain_route(struct evhttp_request *req, const char *path);

#endif
