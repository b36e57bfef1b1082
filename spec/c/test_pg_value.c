/* test_pg_value.c — timestamps as UTC ISO 8601 and database names
 * (core/pg_value.c). */
#include "pg_value.h"
#include "tap.h"

#include <string.h>

/* Whether in converts to want (NULL: refused). */
static int iso(const char *in, const char *want)
{
    char out[PG_VALUE_ISO_LEN] = "untouched";
    int rc = pg_value_utc_iso(in, strlen(in), out);
    if (want == NULL ? rc == -1 && strcmp(out, "untouched") == 0
                     : rc == 0 && strcmp(out, want) == 0)
        return 1;
    printf("# in %s\n# got %d %s\n# want %s\n", in, rc, out, want ? want : "(refused)");
    return 0;
}

static void utc_offsets(void)
{
    CHECK(iso("2024-03-05 14:07:09+00", "2024-03-05T14:07:09Z"));
    CHECK(iso("2024-03-05 14:07:09+05:30", "2024-03-05T08:37:09Z"));
    CHECK(iso("2024-12-31 23:30:00-02", "2025-01-01T01:30:00Z"));
    CHECK(iso("2024-02-29 00:15:00+01", "2024-02-28T23:15:00Z"));
}

static void fractions_kept(void)
{
    CHECK(iso("2024-03-05 14:07:09.123456+00", "2024-03-05T14:07:09.123456Z"));
    CHECK(iso("2024-03-05 14:07:09.5-01", "2024-03-05T15:07:09.5Z"));
    CHECK(iso("2024-03-05 14:07:09.12345678901234567+00", "2024-03-05T14:07:09.12345678901234Z"));
}

static void other_forms_refused(void)
{
    CHECK(iso("infinity", NULL));
    CHECK(iso("-infinity", NULL));
    CHECK(iso("2024-03-05 14:07:09", NULL));      /* too short for a zone */
    CHECK(iso("2024-03-05 14:07:09.123456", NULL)); /* no zone */
    CHECK(iso("2024-03-05T14:07:09Z and more", NULL));
}

static void names(void)
{
    CHECK(pg_value_name_ok("tenant_abc", 10));
    CHECK(pg_value_name_ok("Steeple-db_9", 12));
    CHECK(!pg_value_name_ok("", 0));
    CHECK(!pg_value_name_ok("a b", 3));
    CHECK(!pg_value_name_ok("db;drop", 7));
    CHECK(!pg_value_name_ok("db\"x", 4));
    CHECK(!pg_value_name_ok("dbé", strlen("dbé")));
    char longest[65];
    memset(longest, 'a', 64);
    longest[64] = '\0';
    CHECK(pg_value_name_ok(longest, 63));
    CHECK(!pg_value_name_ok(longest, 64));
    CHECK(!pg_value_name_ok("ab\0c", 4)); /* the length counts, not the NUL */
}

static const struct tap_case cases[] = {
    {"timestamptz: offsets and dates roll over to UTC", utc_offsets},
    {"timestamptz: fractions kept (at most 14 digits)", fractions_kept},
    {"timestamptz: infinity and zoneless forms refused", other_forms_refused},
    {"database names: letters, digits, '_' and '-', 1 to 63 bytes", names},
};

TAP_MAIN(cases)
