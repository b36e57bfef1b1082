/* test_http_framer.c — request framing: header blocks, bodies, limits and
 * refusals. Every case runs twice: the input in one piece, and one byte at a
 * time; both must hand over the same request. */
#include "http_framer.h"
#include "tap.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_LIMIT 256
#define BODY_LIMIT 64
#define BIG_LIMIT 128 /* the body limit of the target "/big" */

static const struct http_framer_limits limits = {HEADER_LIMIT, BODY_LIMIT};

static long limit_of(void *arg, const char *method, size_t method_len, const char *target,
                     size_t target_len)
{
    (void)arg;
    (void)method;
    (void)method_len;
    return target_len == 4 && memcmp(target, "/big", 4) == 0 ? BIG_LIMIT : 0;
}

struct outcome {
    int status; /* the last status: HTTP_FRAMER_REQUEST when one was handed over */
    int refused;
    char block[512];
    char body[512];
    char rest[512]; /* what stays in the input */
};

static void copy_out(struct evbuffer *b, char *out, size_t size)
{
    size_t n = evbuffer_get_length(b);
    if (n >= size)
        n = size - 1;
    evbuffer_copyout(b, out, n);
    out[n] = '\0';
}

/* Feeds text (in one piece, or byte by byte) until a request is handed over,
 * then the rest of it without reading (or, once refused, reading: all of it
 * must be dropped). */
static void run(const char *text, size_t len, int bytewise, struct outcome *o)
{
    struct http_framer *f = http_framer_new(&limits, limit_of, NULL);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    size_t fed = 0;
    memset(o, 0, sizeof *o);
    o->status = HTTP_FRAMER_MORE;
    while (fed < len && o->status != HTTP_FRAMER_REQUEST) {
        size_t n = bytewise ? 1 : len - fed;
        evbuffer_add(in, text + fed, n);
        fed += n;
        o->status = http_framer_read(f, in, out);
    }
    evbuffer_add(in, text + fed, len - fed);
    if (o->status == HTTP_FRAMER_REQUEST && http_framer_refused(f))
        CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_MORE);
    o->refused = http_framer_refused(f);
    copy_out(out, o->block, sizeof o->block);
    copy_out(http_framer_body(f), o->body, sizeof o->body);
    copy_out(in, o->rest, sizeof o->rest);
    evbuffer_free(in);
    evbuffer_free(out);
    http_framer_free(f);
}

struct framing_case {
    const char *name;
    const char *text;
    int status;
    int refused;
    const char *block;
    const char *body;
    const char *rest;
};

#define FORTY "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"
#define LONG_VALUE FORTY "vvvvvvvvvvvvvvvvvvvvvvvv" /* 64 bytes, the body limit */

static const struct framing_case framing[] = {
    {"no body", "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", HTTP_FRAMER_REQUEST, 0,
     "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "", ""},
    {"bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n", HTTP_FRAMER_REQUEST, 0,
     "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "", ""},
    {"empty lines before a request", "\r\n\nGET / HTTP/1.1\r\n\r\n", HTTP_FRAMER_REQUEST, 0,
     "GET / HTTP/1.1\r\n\r\n", "", ""},
    {"incomplete", "GET / HTTP/1.1\r\nHost: x\r\n", HTTP_FRAMER_MORE, 0, "", "",
     "GET / HTTP/1.1\r\nHost: x\r\n"},
    {"Content-Length body, then the next request",
     "POST /x HTTP/1.1\r\nContent-Length: 5\r\nHost: x\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
     HTTP_FRAMER_REQUEST, 0, "POST /x HTTP/1.1\r\nHost: x\r\n\r\n", "hello",
     "GET / HTTP/1.1\r\n\r\n"},
    {"Content-Length: 0", "POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n", HTTP_FRAMER_REQUEST, 0,
     "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"equal Content-Length values", "POST /x HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab",
     HTTP_FRAMER_REQUEST, 0, "POST /x HTTP/1.1\r\n\r\n", "ab", ""},
    {"a body of exactly the limit",
     "POST /x HTTP/1.1\r\nContent-Length: 64\r\n\r\n" LONG_VALUE, HTTP_FRAMER_REQUEST, 0,
     "POST /x HTTP/1.1\r\n\r\n", LONG_VALUE, ""},
    {"chunked, with extensions and a trailer",
     "POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n6 ;a=b\r\n world\r\n"
     "0\r\nX-Trailer: t\r\n\r\nGET",
     HTTP_FRAMER_REQUEST, 0, "POST /x HTTP/1.1\r\n\r\n", "hello world", "GET"},
    {"a route with its own limit", "POST /big HTTP/1.1\r\nContent-Length: 100\r\n\r\n" LONG_VALUE
     "0123456789012345678901234567890123456789",
     HTTP_FRAMER_REQUEST, 0, "POST /big HTTP/1.1\r\n\r\n",
     LONG_VALUE "012345678901234567890123456789012345", "6789"},
    {"Content-Length over the limit", "POST /x HTTP/1.1\r\nContent-Length: 65\r\nX-Request-Id: r1\r\n\r\nabc",
     HTTP_FRAMER_REQUEST, 413, "POST /x HTTP/1.1\r\nX-Request-Id: r1\r\n\r\n", "", ""},
    {"a Content-Length too large to count",
     "POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", HTTP_FRAMER_REQUEST,
     413, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"chunks growing past the limit",
     "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n28\r\n" FORTY "\r\n28\r\nGET / HTTP/1.1\r\n",
     HTTP_FRAMER_REQUEST, 413, "POST /x HTTP/1.1\r\n\r\n",
     FORTY, ""},
    {"one chunk declared past the limit",
     "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffffff\r\nxx",
     HTTP_FRAMER_REQUEST, 413, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"a header block over the limit",
     "GET /a HTTP/1.1\r\nX-Request-Id: big-1\r\nX-Pad: " LONG_VALUE LONG_VALUE LONG_VALUE LONG_VALUE
     "\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "GET /a HTTP/1.1\r\nX-Request-Id: big-1\r\n\r\n", "", ""},
    {"a header line over the limit with no end",
     "GET /a HTTP/1.1\r\nX-Pad: " LONG_VALUE LONG_VALUE LONG_VALUE LONG_VALUE "vvvvvvvv",
     HTTP_FRAMER_REQUEST, 400, "GET /a HTTP/1.1\r\n\r\n", "", ""},
    {"a malformed request line", "G\001T / HTTP/1.1\r\nContent-Length: x\r\nX-Request-Id: no good\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "GET / HTTP/1.1\r\n\r\n", "", ""},
    {"Content-Length and Transfer-Encoding",
     "POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"Content-Length values that differ", "POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"a Content-Length that is not a number", "POST /x HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"a transfer coding other than chunked", "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"white space before a colon", "POST /x HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"a folded Content-Length", "POST /x HTTP/1.1\r\nContent-Length:\r\n 3\r\n\r\nabc",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"a chunk-size line ended by a bare LF",
     "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", HTTP_FRAMER_REQUEST,
     400, "POST /x HTTP/1.1\r\n\r\n", "", ""},
    {"chunk data not followed by CR LF",
     "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
     HTTP_FRAMER_REQUEST, 400, "POST /x HTTP/1.1\r\n\r\n", "abc", ""},
    {"a chunk size that is not hexadecimal",
     "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HTTP_FRAMER_REQUEST, 400,
     "POST /x HTTP/1.1\r\n\r\n", "", ""},
};

static void check_case(const struct framing_case *c, int bytewise)
{
    struct outcome o;
    run(c->text, strlen(c->text), bytewise, &o);
    int ok = o.status == c->status && o.refused == c->refused && strcmp(o.block, c->block) == 0 &&
             strcmp(o.body, c->body) == 0 && strcmp(o.rest, c->rest) == 0;
    if (!ok)
        printf("# %s (%s): status %d refused %d\n#   block [%s]\n#   body [%s]\n#   rest [%s]\n",
               c->name, bytewise ? "byte by byte" : "in one piece", o.status, o.refused, o.block,
               o.body, o.rest);
    CHECK(ok);
}

static void framing_in_one_piece(void)
{
    for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++)
        check_case(&framing[i], 0);
}

static void framing_byte_by_byte(void)
{
    for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++)
        check_case(&framing[i], 1);
}

/* "Expect: 100-continue" asks for 100 Continue once the header block is in
 * and no body byte has come; a body already sent needs none. */
static void expect_continue(void)
{
    static const char head[] = "POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n";
    struct http_framer *f = http_framer_new(&limits, NULL, NULL);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    char block[128];
    evbuffer_add(in, head, strlen(head));
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_CONTINUE);
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_MORE);
    evbuffer_add(in, "ok", 2);
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_REQUEST);
    copy_out(out, block, sizeof block);
    CHECK(strcmp(block, "POST /x HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n") == 0);
    http_framer_next(f);
    evbuffer_drain(out, evbuffer_get_length(out));
    evbuffer_add(in, head, strlen(head));
    evbuffer_add(in, "ok", 2);
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_REQUEST);
    http_framer_next(f);
    static const char old[] = "POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    evbuffer_add(in, old, strlen(old));
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_MORE); /* HTTP/1.0 knows no 100 */
    evbuffer_free(in);
    evbuffer_free(out);
    http_framer_free(f);
}

/* Pipelined requests are framed one at a time: the next only after the
 * answer to the previous one. */
static void one_request_at_a_time(void)
{
    static const char two[] = "POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
                              "GET /b HTTP/1.1\r\n\r\n";
    struct http_framer *f = http_framer_new(&limits, NULL, NULL);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    evbuffer_add(in, two, strlen(two));
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_REQUEST);
    CHECK(http_framer_holding(f));
    evbuffer_drain(out, evbuffer_get_length(out));
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_MORE);
    CHECK(evbuffer_get_length(out) == 0);
    http_framer_next(f);
    CHECK(!http_framer_holding(f));
    CHECK(evbuffer_get_length(http_framer_body(f)) == 0);
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_REQUEST);
    CHECK(evbuffer_get_length(out) == strlen("GET /b HTTP/1.1\r\n\r\n"));
    CHECK(evbuffer_get_length(in) == 0);
    evbuffer_free(in);
    evbuffer_free(out);
    http_framer_free(f);
}

/* A refused request leaves the framer dropping everything after it. */
static void refused_stays_refused(void)
{
    static const char text[] = "POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
    struct http_framer *f = http_framer_new(&limits, NULL, NULL);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    evbuffer_add(in, text, strlen(text));
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_REQUEST);
    CHECK(http_framer_refused(f) == 413);
    CHECK(strcmp(http_framer_why(f), "a body over its limit") == 0);
    http_framer_next(f);
    CHECK(http_framer_holding(f));
    evbuffer_add(in, "GET / HTTP/1.1\r\n\r\n", 18);
    CHECK(http_framer_read(f, in, out) == HTTP_FRAMER_MORE);
    CHECK(evbuffer_get_length(in) == 0);
    evbuffer_free(in);
    evbuffer_free(out);
    http_framer_free(f);
}

/* Memory stays bounded by the limits whatever is sent: a header block is
 * refused once it passes the header limit, whatever follows. */
static void bounded_memory(void)
{
    struct http_framer *f = http_framer_new(&limits, NULL, NULL);
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    char junk[100];
    memset(junk, 'a', sizeof junk);
    int status = HTTP_FRAMER_MORE;
    size_t fed = 0;
    while (status == HTTP_FRAMER_MORE && fed < 100000) {
        evbuffer_add(in, junk, sizeof junk);
        fed += sizeof junk;
        CHECK(evbuffer_get_length(in) <= HEADER_LIMIT + sizeof junk);
        status = http_framer_read(f, in, out);
    }
    CHECK(status == HTTP_FRAMER_REQUEST);
    CHECK(http_framer_refused(f) == 400);
    CHECK(fed <= HEADER_LIMIT + sizeof junk);
    evbuffer_free(in);
    evbuffer_free(out);
    http_framer_free(f);
}

static const struct tap_case cases[] = {
    {"framing, the input in one piece", framing_in_one_piece},
    {"framing, the input byte by byte", framing_byte_by_byte},
    {"Expect: 100-continue asks for 100 Continue", expect_continue},
    {"pipelined requests are framed one at a time", one_request_at_a_time},
    {"a refused request drops the rest of the connection", refused_stays_refused},
    {"a header block is refused once past the limit", bounded_memory},
};

TAP_MAIN(cases)
