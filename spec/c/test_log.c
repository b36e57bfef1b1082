/* test_log.c — JSON escaping and log line building. */
#include "log.h"
#include "tap.h"

#include <string.h>

static void escapes_quotes_and_controls(void)
{
    char out[64];
    size_t n = json_escape(out, sizeof out, "a\"b\\c\n\x01", 7);
    out[n] = '\0';
    CHECK(strcmp(out, "a\\\"b\\\\c\\n\\u0001") == 0);
}

static void escape_never_overflows(void)
{
    char out[8];
    memset(out, 'x', sizeof out);
    size_t n = json_escape(out, 5, "\"\"\"\"\"\"", 6);
    CHECK(n <= 5);
    CHECK(out[5] == 'x' && out[7] == 'x');
}

static void line_is_json_object(void)
{
    struct log_line l;
    log_begin(&l, LOG_INFO, "hello \"world\"");
    log_str(&l, "k", "v");
    log_int(&l, "n", -42);
    log_bool(&l, "b", 1);
    l.buf[l.len] = '\0';
    CHECK(strncmp(l.buf, "{\"ts\":\"", 7) == 0);
    CHECK(strstr(l.buf, "\"msg\":\"hello \\\"world\\\"\"") != NULL);
    CHECK(strstr(l.buf, "\"k\":\"v\",\"n\":-42,\"b\":true") != NULL);
}

static void long_values_are_truncated_not_overflowed(void)
{
    static char big[10000];
    memset(big, 'a', sizeof big - 1);
    struct log_line l;
    log_begin(&l, LOG_INFO, "m");
    log_str(&l, "big", big);
    CHECK(l.truncated == 1);
    CHECK(l.len < sizeof l.buf);
}

static void levels_parse(void)
{
    CHECK(log_level_parse("debug") == LOG_DEBUG);
    CHECK(log_level_parse("error") == LOG_ERROR);
    CHECK(log_level_parse("loud") == -1);
}

static const struct tap_case cases[] = {
    {"escapes quotes and control characters", escapes_quotes_and_controls},
    {"escaping never writes past its capacity", escape_never_overflows},
    {"a line is one JSON object with the fields", line_is_json_object},
    {"long values are truncated, not overflowed", long_values_are_truncated_not_overflowed},
    {"level names parse", levels_parse},
};

TAP_MAIN(cases)
