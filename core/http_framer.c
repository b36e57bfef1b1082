/* http_framer.c — request framing in front of evhttp (see http_framer.h).
 *
 * Framing follows RFC 9112 and refuses what a proxy in front could read
 * differently: Content-Length together with Transfer-Encoding, differing
 * Content-Length values, a transfer coding other than one "chunked", white
 * space before a header's colon, a folded framing header, and chunk lines not
 * ended by CR LF. Header lines may end with a bare LF, as evhttp accepts. */
#include "http_framer.h"

#include <event2/buffer.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHUNK_LINE_MAX 1024 /* a chunk-size line, extensions included */

enum state {
    ST_HEAD,       /* looking for the end of a header block */
    ST_BODY,       /* reading a Content-Length body */
    ST_CHUNK_SIZE, /* a chunk-size line */
    ST_CHUNK_DATA, /* a chunk's data */
    ST_CHUNK_END,  /* the CR LF after a chunk's data */
    ST_TRAILER,    /* trailer lines after the last chunk */
    ST_HANDED,     /* a request was handed over, not yet answered */
    ST_DISCARD,    /* refused (or out of memory): later bytes are dropped */
};

/* What one step of the state machine leads to. */
enum step {
    NEED_MORE,     /* wait for more bytes */
    NEXT,          /* the state changed: go on */
    SEND_CONTINUE, /* a body is expected and the client waits for 100 */
    COMPLETE,      /* the request is complete: hand it over */
    REFUSE_400,
    REFUSE_413,
    NO_MEMORY,
};

struct http_framer {
    const struct http_framer_limits *limits;
    http_body_limit_fn body_limit;
    void *arg;
    enum state state;
    size_t line_start;       /* ST_HEAD: offset of the first line not searched yet */
    size_t trailer_bytes;    /* ST_TRAILER: trailer lines so far */
    unsigned long long left; /* ST_BODY, ST_CHUNK_DATA: bytes still to read */
    long limit;              /* the body limit of the current request */
    int refused;
    const char *why; /* the reason for a 400, for tests and logs */
    struct evbuffer *block; /* the header block to hand over */
    struct evbuffer *body;
};

/* ---- reading a header block ---------------------------------------------- */

/* What the framer needs from a header block. */
struct head {
    const char *method, *target, *version;
    size_t method_len, target_len, version_len;
    const char *request_id; /* the first X-Request-Id value, or NULL */
    size_t request_id_len;
    int chunked;
    int has_length;
    unsigned long long length; /* ULLONG_MAX when too large to count */
    int expect_continue;
    const char *bad; /* why the framing cannot be trusted, or NULL */
};

/* The line at p[*pos..n): sets its start and length without its line end and
 * moves *pos past the LF. Returns 0 when no LF follows. */
static int next_line(const char *p, size_t n, size_t *pos, const char **line, size_t *len)
{
    const char *lf = memchr(p + *pos, '\n', n - *pos);
    if (lf == NULL)
        return 0;
    *line = p + *pos;
    *len = (size_t)(lf - *line);
    if (*len > 0 && (*line)[*len - 1] == '\r')
        (*len)--;
    *pos = (size_t)(lf - p) + 1;
    return 1;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_ows(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_ows((*s)[*len - 1]))
        (*len)--;
}

static int name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* Splits a request line into method, target and version; a part that is
 * missing is empty (never NULL). */
static void read_request_line(struct head *h, const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    h->method = line;
    h->method_len = sp ? (size_t)(sp - line) : len;
    h->target = h->version = line + len;
    if (sp == NULL)
        return;
    const char *t = sp + 1;
    size_t rest = len - h->method_len - 1;
    const char *sp2 = memchr(t, ' ', rest);
    h->target = t;
    h->target_len = sp2 ? (size_t)(sp2 - t) : rest;
    if (sp2) {
        h->version = sp2 + 1;
        h->version_len = rest - h->target_len - 1;
    }
}

/* Folds one Content-Length field value, a list of equal numbers, into h. */
static void read_length(struct head *h, const char *v, size_t len)
{
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        const char *e = v + start;
        size_t elen = i - start;
        trim(&e, &elen);
        if (elen == 0) {
            h->bad = "an empty Content-Length";
            return;
        }
        unsigned long long n = 0;
        for (size_t k = 0; k < elen; k++) {
            if (e[k] < '0' || e[k] > '9') {
                h->bad = "a Content-Length that is not a number";
                return;
            }
            n = n > (ULLONG_MAX - 9) / 10 ? ULLONG_MAX : n * 10 + (unsigned)(e[k] - '0');
        }
        if (h->has_length && h->length != n) {
            h->bad = "Content-Length values that differ";
            return;
        }
        h->has_length = 1;
        h->length = n;
        if (i >= len)
            return;
        i++; /* past the comma */
    }
}

/* Reads one field line into h. Returns 1 for a framing header (evhttp must
 * not see it), else 0. */
static int read_field(struct head *h, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line) {
        h->bad = "a header line without a name and colon";
        return 0;
    }
    size_t nlen = (size_t)(colon - line);
    if (is_ows(line[nlen - 1])) {
        h->bad = "white space before a header's colon";
        return 0;
    }
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    trim(&v, &vlen);
    if (name_is(line, nlen, "content-length")) {
        read_length(h, v, vlen);
        return 1;
    }
    if (name_is(line, nlen, "transfer-encoding")) {
        if (h->chunked || !(vlen == 7 && strncasecmp(v, "chunked", 7) == 0))
            h->bad = "a transfer coding other than one chunked";
        h->chunked = 1;
        return 1;
    }
    if (name_is(line, nlen, "expect"))
        h->expect_continue = vlen == 12 && strncasecmp(v, "100-continue", 12) == 0;
    else if (name_is(line, nlen, "x-request-id") && h->request_id == NULL) {
        h->request_id = v;
        h->request_id_len = vlen;
    }
    return 0;
}

static int add_line(struct evbuffer *out, const char *line, size_t len)
{
    return evbuffer_add(out, line, len) != 0 || evbuffer_add(out, "\r\n", 2) != 0 ? -1 : 0;
}

/* Reads the complete header block p[0..n) into h and appends it to out
 * without its framing headers, every line ended by CR LF. Returns 0, or -1
 * when out of memory. */
static int read_block(struct head *h, const char *p, size_t n, struct evbuffer *out)
{
    size_t pos = 0, len;
    const char *line;
    int prev = -1; /* the previous field line: -1 none, 0 kept, 1 dropped */
    memset(h, 0, sizeof *h);
    if (!next_line(p, n, &pos, &line, &len)) /* the block ends with an empty line */
        abort();
    read_request_line(h, line, len);
    if (add_line(out, line, len) != 0)
        return -1;
    while (next_line(p, n, &pos, &line, &len) && len > 0) {
        if (is_ows(line[0])) { /* obs-fold: continues the previous field */
            if (prev != 0)
                h->bad = prev < 0 ? "a folded line before any header"
                                  : "a folded Content-Length or Transfer-Encoding";
            else if (add_line(out, line, len) != 0)
                return -1;
            continue;
        }
        prev = read_field(h, line, len);
        if (prev == 0 && add_line(out, line, len) != 0)
            return -1;
    }
    if (h->chunked && h->has_length)
        h->bad = "both Content-Length and Transfer-Encoding";
    return evbuffer_add(out, "\r\n", 2);
}

/* ---- refusals ------------------------------------------------------------ */

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int all_of(const char *s, size_t len, int (*ok)(unsigned char))
{
    for (size_t i = 0; i < len; i++)
        if (!ok((unsigned char)s[i]))
            return 0;
    return len > 0;
}

static int is_vchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static int is_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

/* Appends to out a header block evhttp can parse for a request refused with
 * 400: its request line when that is well formed (else "GET / HTTP/1.1")
 * and its X-Request-Id when valid, read from the complete lines of p[0..n)
 * (a block perhaps cut short). Returns 0, or -1 when out of memory. */
static int synthesize(const char *p, size_t n, struct evbuffer *out)
{
    struct head h;
    size_t pos = 0, len;
    const char *line;
    memset(&h, 0, sizeof h);
    if (next_line(p, n, &pos, &line, &len))
        read_request_line(&h, line, len);
    int sane = all_of(h.method, h.method_len, is_tchar) &&
               all_of(h.target, h.target_len, is_vchar) && h.version_len == 8 &&
               (memcmp(h.version, "HTTP/1.1", 8) == 0 || memcmp(h.version, "HTTP/1.0", 8) == 0);
    if (sane ? add_line(out, line, len) != 0 : evbuffer_add(out, "GET / HTTP/1.1\r\n", 16) != 0)
        return -1;
    while (next_line(p, n, &pos, &line, &len) && len > 0) {
        const char *colon = memchr(line, ':', len);
        if (colon == NULL || !name_is(line, (size_t)(colon - line), "x-request-id"))
            continue;
        const char *v = colon + 1;
        size_t vlen = len - (size_t)(v - line);
        trim(&v, &vlen);
        if (vlen <= 64 && all_of(v, vlen, is_id_char) &&
            (evbuffer_add(out, "X-Request-Id: ", 14) != 0 || add_line(out, v, vlen) != 0))
            return -1;
        break;
    }
    return evbuffer_add(out, "\r\n", 2);
}

/* Replaces the block to hand over with one for a 400, read from the first
 * n bytes of in. */
static enum step refuse_head(struct http_framer *f, struct evbuffer *in, size_t n,
                             const char *why)
{
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    evbuffer_drain(f->block, evbuffer_get_length(f->block));
    f->why = why;
    if (p == NULL || synthesize(p, n, f->block) != 0)
        return NO_MEMORY;
    return REFUSE_400;
}

/* ---- the states ---------------------------------------------------------- */

/* Drops the empty lines a request may follow (RFC 9112, 2.2). */
static void skip_empty_lines(struct evbuffer *in)
{
    unsigned char two[2];
    for (;;) {
        ev_ssize_t n = evbuffer_copyout(in, two, 2);
        if (n >= 1 && two[0] == '\n')
            evbuffer_drain(in, 1);
        else if (n == 2 && two[0] == '\r' && two[1] == '\n')
            evbuffer_drain(in, 2);
        else
            return;
    }
}

/* Searches in from f->line_start for the empty line that ends the header
 * block. Returns the length of the block with it, or 0 when not there yet. */
static size_t find_block_end(struct http_framer *f, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    while (f->line_start < len) {
        struct evbuffer_ptr start, lf;
        if (evbuffer_ptr_set(in, &start, f->line_start, EVBUFFER_PTR_SET) != 0)
            return 0;
        lf = evbuffer_search(in, "\n", 1, &start);
        if (lf.pos < 0)
            return 0;
        size_t line_len = (size_t)lf.pos - f->line_start;
        char c = 0;
        if (line_len == 1 && evbuffer_copyout_from(in, &start, &c, 1) != 1)
            return 0;
        f->line_start = (size_t)lf.pos + 1;
        if (line_len == 0 || (line_len == 1 && c == '\r'))
            return f->line_start;
    }
    return 0;
}

static long body_limit(struct http_framer *f, const struct head *h)
{
    long limit = f->body_limit ? f->body_limit(f->arg, h->method, h->method_len, h->target,
                                               h->target_len)
                               : 0;
    return limit > 0 ? limit : f->limits->body_bytes;
}

static enum step step_head(struct http_framer *f, struct evbuffer *in)
{
    size_t max = (size_t)f->limits->header_bytes;
    if (f->line_start == 0)
        skip_empty_lines(in);
    size_t end = find_block_end(f, in);
    size_t have = evbuffer_get_length(in);
    if (end == 0 || end > max) {
        if (end == 0 && have <= max)
            return NEED_MORE;
        return refuse_head(f, in, have < max ? have : max, "a header block over the limit");
    }
    struct head h;
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)end);
    evbuffer_drain(f->block, evbuffer_get_length(f->block));
    if (p == NULL || read_block(&h, p, end, f->block) != 0)
        return NO_MEMORY;
    if (h.bad != NULL)
        return refuse_head(f, in, end, h.bad);
    int has_body = h.chunked || (h.has_length && h.length > 0);
    int wants_continue = h.expect_continue && h.version_len == 8 &&
                         memcmp(h.version, "HTTP/1.1", 8) == 0;
    f->limit = has_body ? body_limit(f, &h) : 0;
    evbuffer_drain(in, end); /* h points into it: no use of h below */
    f->line_start = 0;
    if (!has_body)
        return COMPLETE;
    if (h.has_length && h.length > (unsigned long long)f->limit)
        return REFUSE_413;
    f->left = h.length;
    f->state = h.chunked ? ST_CHUNK_SIZE : ST_BODY;
    if (wants_continue && evbuffer_get_length(in) == 0)
        return SEND_CONTINUE;
    return NEXT;
}

/* Moves up to f->left bytes of in to the body. Returns 0, or -1 when out of memory. */
static int take_body(struct http_framer *f, struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    if (n > f->left)
        n = (size_t)f->left;
    if (n > 0 && evbuffer_remove_buffer(in, f->body, n) != (int)n)
        return -1;
    f->left -= n;
    return 0;
}

static enum step step_body(struct http_framer *f, struct evbuffer *in)
{
    if (take_body(f, in) != 0)
        return NO_MEMORY;
    return f->left == 0 ? COMPLETE : NEED_MORE;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads a chunk-size line ("1a;ext=x" and its CR) of len bytes into *size
 * (ULLONG_MAX when too large to count). Returns 0, or -1 when malformed. */
static int parse_chunk_size(const char *line, size_t len, unsigned long long *size)
{
    size_t i = 0, end = len - 1; /* without the CR */
    int d;
    *size = 0;
    for (; i < end && (d = hex_value(line[i])) >= 0; i++)
        *size = *size > (ULLONG_MAX >> 4) ? ULLONG_MAX : (*size << 4) | (unsigned)d;
    if (i == 0)
        return -1;
    while (i < end && is_ows(line[i]))
        i++;
    return i == end || line[i] == ';' ? 0 : -1;
}

static enum step step_chunk_size(struct http_framer *f, struct evbuffer *in)
{
    char line[CHUNK_LINE_MAX + 1];
    struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
    if (lf.pos < 0) {
        if (evbuffer_get_length(in) <= CHUNK_LINE_MAX)
            return NEED_MORE;
        f->why = "a chunk-size line over 1024 bytes";
        return REFUSE_400;
    }
    size_t len = (size_t)lf.pos;
    unsigned long long size;
    if (len > CHUNK_LINE_MAX) {
        f->why = "a chunk-size line over 1024 bytes";
        return REFUSE_400;
    }
    evbuffer_remove(in, line, len + 1);
    if (len == 0 || line[len - 1] != '\r' || parse_chunk_size(line, len, &size) != 0) {
        f->why = "a malformed chunk-size line";
        return REFUSE_400;
    }
    if (size == 0) {
        f->state = ST_TRAILER;
        f->trailer_bytes = 0;
        return NEXT;
    }
    if (size > (unsigned long long)f->limit - evbuffer_get_length(f->body))
        return REFUSE_413;
    f->left = size;
    f->state = ST_CHUNK_DATA;
    return NEXT;
}

static enum step step_chunk_data(struct http_framer *f, struct evbuffer *in)
{
    if (take_body(f, in) != 0)
        return NO_MEMORY;
    if (f->left > 0)
        return NEED_MORE;
    f->state = ST_CHUNK_END;
    return NEXT;
}

static enum step step_chunk_end(struct http_framer *f, struct evbuffer *in)
{
    char two[2];
    ev_ssize_t n = evbuffer_copyout(in, two, 2);
    if (n < 1 || (n == 1 && two[0] == '\r'))
        return NEED_MORE;
    if (n < 2 || two[0] != '\r' || two[1] != '\n') {
        f->why = "chunk data not followed by CR LF";
        return REFUSE_400;
    }
    evbuffer_drain(in, 2);
    f->state = ST_CHUNK_SIZE;
    return NEXT;
}

/* Trailer lines are read and dropped; with the header block they may take
 * limits.header_bytes. */
static enum step step_trailer(struct http_framer *f, struct evbuffer *in)
{
    size_t max = (size_t)f->limits->header_bytes;
    struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
    size_t len = lf.pos < 0 ? evbuffer_get_length(in) : (size_t)lf.pos + 1;
    if (f->trailer_bytes + len > max) {
        f->why = "trailer lines over the header limit";
        return REFUSE_400;
    }
    if (lf.pos < 0)
        return NEED_MORE;
    struct evbuffer_ptr cr;
    char c = 0;
    if (len < 2 || evbuffer_ptr_set(in, &cr, len - 2, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(in, &cr, &c, 1) != 1 || c != '\r') {
        f->why = "a trailer line not ended by CR LF";
        return REFUSE_400;
    }
    evbuffer_drain(in, len);
    f->trailer_bytes += len;
    return len == 2 ? COMPLETE : NEXT;
}

/* ---- the machine --------------------------------------------------------- */

static enum step step(struct http_framer *f, struct evbuffer *in)
{
    switch (f->state) {
    case ST_HEAD: return step_head(f, in);
    case ST_BODY: return step_body(f, in);
    case ST_CHUNK_SIZE: return step_chunk_size(f, in);
    case ST_CHUNK_DATA: return step_chunk_data(f, in);
    case ST_CHUNK_END: return step_chunk_end(f, in);
    case ST_TRAILER: return step_trailer(f, in);
    case ST_HANDED: return NEED_MORE;
    case ST_DISCARD:
        evbuffer_drain(in, evbuffer_get_length(in));
        return NEED_MORE;
    default: abort();
    }
}

/* Hands the block over: to serve (status 0) or refused. */
static enum http_framer_status hand_over(struct http_framer *f, struct evbuffer *in,
                                         struct evbuffer *out, int status)
{
    f->refused = status;
    f->state = status ? ST_DISCARD : ST_HANDED;
    if (status)
        evbuffer_drain(in, evbuffer_get_length(in));
    if (evbuffer_add_buffer(out, f->block) != 0) {
        f->state = ST_DISCARD;
        return HTTP_FRAMER_ERROR;
    }
    return HTTP_FRAMER_REQUEST;
}

enum http_framer_status http_framer_read(struct http_framer *f, struct evbuffer *in,
                                         struct evbuffer *out)
{
    for (;;) {
        switch (step(f, in)) {
        case NEED_MORE: return HTTP_FRAMER_MORE;
        case NEXT: break;
        case SEND_CONTINUE: return HTTP_FRAMER_CONTINUE;
        case COMPLETE: return hand_over(f, in, out, 0);
        case REFUSE_400: return hand_over(f, in, out, 400);
        case REFUSE_413: return hand_over(f, in, out, 413);
        case NO_MEMORY:
            f->state = ST_DISCARD;
            evbuffer_drain(in, evbuffer_get_length(in));
            return HTTP_FRAMER_ERROR;
        default: abort();
        }
    }
}

struct http_framer *http_framer_new(const struct http_framer_limits *limits,
                                    http_body_limit_fn limit_fn, void *arg)
{
    struct http_framer *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->limits = limits;
    f->body_limit = limit_fn;
    f->arg = arg;
    f->state = ST_HEAD;
    f->block = evbuffer_new();
    f->body = evbuffer_new();
    if (f->block == NULL || f->body == NULL) {
        http_framer_free(f);
        return NULL;
    }
    return f;
}

void http_framer_free(struct http_framer *f)
{
    if (f == NULL)
        return;
    if (f->block)
        evbuffer_free(f->block);
    if (f->body)
        evbuffer_free(f->body);
    free(f);
}

int http_framer_refused(const struct http_framer *f)
{
    return f->refused;
}

const char *http_framer_why(const struct http_framer *f)
{
    return f->refused == 413 ? "a body over its limit" : f->why;
}

struct evbuffer *http_framer_body(struct http_framer *f)
{
    return f->body;
}

int http_framer_holding(const struct http_framer *f)
{
    return f->state == ST_HANDED || f->state == ST_DISCARD;
}

void http_framer_next(struct http_framer *f)
{
    if (f->state != ST_HANDED)
        return;
    f->state = ST_HEAD;
    f->line_start = 0;
    f->left = 0;
    f->refused = 0;
    f->why = NULL;
    evbuffer_drain(f->body, evbuffer_get_length(f->body));
    evbuffer_drain(f->block, evbuffer_get_length(f->block));
}
