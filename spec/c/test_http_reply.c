/* test_http_reply.c — header validation, request ids, error bodies. */
#include "http_reply.h"
#include "tap.h"

#include <string.h>

static void header_blocks(void)
{
    static const struct {
        const char *blob;
        int ok;
    } cases[] = {
        {"", 1},
        {"Content-Type: application/json\n", 1},
        {"A: 1\nB-c: two words\n", 1},
        {"A: 1", 0},            /* unterminated */
        {"A 1\n", 0},           /* no colon */
        {": v\n", 0},           /* empty name */
        {"A b: v\n", 0},        /* space in name */
        {"A: v\r\nB: w\n", 0},  /* CR in value */
        {"A:v\n", 0},           /* missing space */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *bad = http_headers_check(cases[i].blob, strlen(cases[i].blob));
        if ((bad == NULL) != cases[i].ok)
            printf("# case %zu: %s\n", i, cases[i].blob);
        CHECK((bad == NULL) == cases[i].ok);
    }
}

static void request_ids(void)
{
    CHECK(http_request_id_valid("abc-DEF_1.2"));
    CHECK(!http_request_id_valid(""));
    CHECK(!http_request_id_valid("has space"));
    CHECK(!http_request_id_valid("semi;colon"));
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    CHECK(!http_request_id_valid(id65));
    id65[64] = '\0';
    CHECK(http_request_id_valid(id65));
}

static void error_body(void)
{
    struct http_reply r;
    http_reply_error(&r, 503, "service_unavailable", "rid-1");
    CHECK(r.status == 503);
    CHECK(strncmp(r.body, "{\"error\":{\"code\":\"service_unavailable\"", 38) == 0);
    CHECK(strstr(r.body, "\"requestId\":\"rid-1\"}}") != NULL);
    CHECK(strstr(r.headers, "Retry-After: 1\n") != NULL);
    CHECK(http_headers_check(r.headers, r.headers_len) == NULL);
    http_reply_error(&r, 500, "internal_error", "x");
    CHECK(strstr(r.headers, "Retry-After") == NULL);
}

static const struct tap_case cases[] = {
    {"response header blocks are validated", header_blocks},
    {"request ids follow API.md", request_ids},
    {"generic error bodies", error_body},
};

TAP_MAIN(cases)
