/* http_reply.c — evhttp helpers (see http_reply.h). */
#include "http_reply.h"
#include "crypto.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

const char *http_method_name(int cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "UNKNOWN";
    }
}

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 400 ? "OK" : "Error";
    }
}

static const char *generic_message(const char *code)
{
    if (strcmp(code, "service_unavailable") == 0)
        return "The service is temporarily unavailable. Try again shortly.";
    if (strcmp(code, "bad_request") == 0)
        return "The request could not be read.";
    return "Something went wrong. Use the request id when reporting this.";
}

void http_reply_error(struct http_reply *reply, int status, const char *code,
                      const char *request_id)
{
    memset(reply, 0, sizeof *reply);
    reply->status = status;
    int n = snprintf(reply->error_body, sizeof reply->error_body,
                     "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"requestId\":\"%s\"}}",
                     code, generic_message(code), request_id);
    reply->body = reply->error_body;
    reply->body_len = (size_t)n < sizeof reply->error_body ? (size_t)n
                                                          : sizeof reply->error_body - 1;
    reply->headers = status == 503 ? "Content-Type: application/json; charset=utf-8\n"
                                     "Retry-After: 1\n"
                                   : "Content-Type: application/json; charset=utf-8\n";
    reply->headers_len = strlen(reply->headers);
}

static int is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

const char *http_headers_check(const char *blob, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t name = i;
        while (i < len && is_token_char((unsigned char)blob[i]))
            i++;
        if (i == name || i + 1 >= len || blob[i] != ':' || blob[i + 1] != ' ')
            return "a response header name is not a valid token";
        for (i += 2; i < len && blob[i] != '\n'; i++)
            if (blob[i] == '\r' || blob[i] == '\0')
                return "a response header value contains CR or NUL";
        if (i >= len)
            return "a response header line is not terminated";
        i++;
    }
    return NULL;
}

/* Adds the validated header lines to evhttp's output headers. */
static int add_headers(struct evkeyvalq *out, const char *blob, size_t len)
{
    char line[8192];
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(blob + i, '\n', len - i);
        size_t n = (size_t)(nl - (blob + i));
        if (n >= sizeof line)
            return -1;
        memcpy(line, blob + i, n);
        line[n] = '\0';
        char *colon = strchr(line, ':');
        *colon = '\0';
        if (evhttp_add_header(out, line, colon + 2) != 0)
            return -1;
        i += n + 1;
    }
    return 0;
}

int http_reply_send(struct evhttp_request *req, const struct http_reply *reply,
                    const char *request_id, int closing)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    int rc = 0;
    if (reply->headers && add_headers(out, reply->headers, reply->headers_len) != 0) {
        evhttp_clear_headers(out);
        rc = -1;
    }
    evhttp_add_header(out, "X-Request-Id", request_id);
    if (closing)
        evhttp_add_header(out, "Connection", "close");
    int status = rc == 0 ? reply->status : 500;
    if (rc == 0 && reply->body_len > 0)
        evbuffer_add(evhttp_request_get_output_buffer(req), reply->body, reply->body_len);
    evhttp_send_reply(req, status, http_reason(status), NULL);
    return rc;
}

int http_request_id_valid(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        if (n >= REQUEST_ID_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

/* New ids are a random per-process prefix and a counter: unique without a
 * system call per request. Not secret, only unique. */
static char id_prefix[13];
static unsigned long long id_counter;

void http_request_ids_init(void)
{
    crypto_random_hex(id_prefix, 6);
    crypto_random(&id_counter, sizeof id_counter);
    id_counter &= 0xffffffffffull; /* room to count for ever */
}

void http_request_id(struct evhttp_request *req, char *out)
{
    const char *given =
        req ? evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id") : NULL;
    if (given && http_request_id_valid(given)) {
        memcpy(out, given, strlen(given) + 1);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    if (id_prefix[0] == '\0')
        http_request_ids_init();
    unsigned long long n = ++id_counter;
    memcpy(out, id_prefix, 12);
    for (int i = 23; i >= 12; i--, n >>= 4)
        out[i] = hex[n & 15];
    out[24] = '\0';
}

int http_plain_route(struct evhttp_request *req, const char *path)
{
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strlen(path);
    if (strncmp(uri, path, n) != 0 || (uri[n] != '\0' && uri[n] != '?'))
        return 0;
    struct evbuffer *buf = evhttp_request_get_output_buffer(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    evbuffer_add(buf, "{\"status\":\"ok\"}", 15);
    evhttp_send_reply(req, 200, "OK", NULL);
    return 1;
}
