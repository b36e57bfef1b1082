/* test_phone.c — phone numbers as people write them, to E.164
 * (core/phone.c). */
#include "phone.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

/* Whether in[0..len) becomes want (NULL: refused), and out past the number
 * is left alone. */
static int converts_n(const char *in, size_t len, const char *want)
{
    char out[PHONE_E164_MAX + 1];
    memset(out, '#', sizeof out);
    size_t n = phone_e164(in, len, out, PHONE_E164_MAX);
    int ok = want == NULL ? n == 0
                          : n == strlen(want) && memcmp(out, want, n) == 0 && out[n] == '#';
    if (ok)
        return 1;
    printf("# in \"%.*s\" (%zu bytes)\n# got %zu \"%.*s\"\n# want %s\n", (int)len, in, len, n, (int)n, out,
           want ? want : "(refused)");
    return 0;
}

static int converts(const char *in, const char *want)
{
    return converts_n(in, strlen(in), want);
}

static void e164_kept(void)
{
    CHECK(converts("+15551234567", "+15551234567"));
    CHECK(converts("+4930123456", "+4930123456"));
    CHECK(converts("+12345678", "+12345678"));               /* 8 digits, the fewest */
    CHECK(converts("+123456789012345", "+123456789012345")); /* 15, the most */
    CHECK(converts("+5551234567", "+5551234567"));           /* + and 10 digits: as written */
    CHECK(converts("+44 20 7946 0958", "+442079460958"));
    CHECK(converts("+1 (555) 123-4567", "+15551234567"));
    CHECK(converts("(+1) 555.123.4567", "+15551234567"));    /* + after a separator */
}

static void north_american(void)
{
    CHECK(converts("5551234567", "+15551234567"));
    CHECK(converts("(555) 123-4567", "+15551234567"));
    CHECK(converts("555-123-4567", "+15551234567"));
    CHECK(converts("555.123.4567", "+15551234567"));
    CHECK(converts("555 123 4567", "+15551234567"));
    CHECK(converts("2001234567", "+12001234567"));
    CHECK(converts("9991234567", "+19991234567"));
    CHECK(converts("15551234567", "+15551234567"));
    CHECK(converts("1 (555) 123-4567", "+15551234567"));
    CHECK(converts("1-555-123-4567", "+15551234567"));
}

static void separators_dropped(void)
{
    CHECK(converts("555\t123\t4567", "+15551234567"));
    CHECK(converts("555\r\n123\n4567", "+15551234567"));
    CHECK(converts("555\f123\v4567", "+15551234567")); /* form feed, vertical tab */
    CHECK(converts(" ( 555 ) - 123 . 4567 ", "+15551234567"));
    CHECK(converts("--555--123--4567..", "+15551234567"));
    CHECK(converts("()5551234567()", "+15551234567"));
}

static void letters_refused(void)
{
    CHECK(converts("555v123v4567", NULL)); /* v is a letter, not a vertical tab */
    CHECK(converts("v5551234567", NULL));
    CHECK(converts("5551234567v", NULL));
    CHECK(converts("555V1234567", NULL));
    CHECK(converts("555-CALL-NOW", NULL));
    CHECK(converts("555-123-4567 x12", NULL));
    CHECK(converts("tel:+15551234567", NULL));
}

static void other_signs_refused(void)
{
    CHECK(converts("555/123/4567", NULL));
    CHECK(converts("555_123_4567", NULL));
    CHECK(converts("555,1234567", NULL));
    CHECK(converts("555+1234567", NULL));  /* + only in front */
    CHECK(converts("1+5551234567", NULL));
    CHECK(converts("++15551234567", NULL));
    CHECK(converts("+ +15551234567", NULL));
    CHECK(converts("#5551234567", NULL));
    CHECK(converts("\xC2\xA0" "5551234567", NULL)); /* a no-break space is no separator */
    CHECK(converts("\xEF\xBC\x95" "551234567", NULL)); /* nor is a full-width digit a digit */
    CHECK(converts_n("555\0" "1234567", 11, NULL));
}

static void lengths_refused(void)
{
    CHECK(converts("", NULL));
    CHECK(converts("   ", NULL));
    CHECK(converts("+", NULL));
    CHECK(converts("+1234567", NULL));          /* 7 digits */
    CHECK(converts("+1234567890123456", NULL)); /* 16 */
    CHECK(converts("+123456789012345678901234567890", NULL));
    CHECK(converts("555-12", NULL));
    CHECK(converts("555123456", NULL));    /* 9 digits */
    CHECK(converts("555123456789", NULL)); /* 12 */
    CHECK(converts("12345678901234567890", NULL));
}

static void first_digits(void)
{
    CHECK(converts("+05551234567", NULL));  /* no country code starts with 0 */
    CHECK(converts("0551234567", NULL));    /* 10 digits from 0 or 1: not North American */
    CHECK(converts("1551234567", NULL));
    CHECK(converts("10551234567", NULL));   /* 1 then 0 or 1 */
    CHECK(converts("11551234567", NULL));
    CHECK(converts("25551234567", NULL));   /* 11 digits not from 1 */
    CHECK(converts("+0", NULL));
}

static void room_checked(void)
{
    char out[PHONE_E164_MAX];
    CHECK(phone_e164("5551234567", 10, out, 12) == 12);
    CHECK(phone_e164("5551234567", 10, out, 11) == 0);
    CHECK(phone_e164("+123456789012345", 16, out, PHONE_E164_MAX) == 16);
    CHECK(phone_e164("+123456789012345", 16, out, PHONE_E164_MAX - 1) == 0);
    CHECK(phone_e164("5551234567", 10, out, 0) == 0);
    CHECK(phone_e164("5551234567 and more", 10, out, sizeof out) == 12); /* len counts */
}

static const struct tap_case cases[] = {
    {"+ and 8 to 15 digits, the first not 0: kept", e164_kept},
    {"10 digits from 2, or 11 from 1 then 2: +1", north_american},
    {"spaces, tabs, line breaks, form feeds, vertical tabs, ( ) . - dropped", separators_dropped},
    {"letters refused, v included", letters_refused},
    {"other signs refused; + only in front, once", other_signs_refused},
    {"other lengths refused", lengths_refused},
    {"first digits: +0, 0 and 1 refused where the rules say", first_digits},
    {"the output's room is checked", room_checked},
};

TAP_MAIN(cases)
