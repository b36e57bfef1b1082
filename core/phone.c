/* phone.c — phone numbers to E.164 (see phone.h). */
#include "phone.h"

/* A separator people put between digits: dropped. */
static int is_separator(char c)
{
    switch (c) {
    case ' ': case '\t': case '\n': case '\r': case '\f': case '\v':
    case '(': case ')': case '.': case '-':
        return 1;
    default:
        return 0;
    }
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Copies the digits of s to d (room for PHONE_E164_MAX), separators dropped;
 * *plus is set when the first kept character is a +. Returns the number of
 * digits, or -1 when s holds anything else or too many digits. */
static int keep_digits(const char *s, size_t len, char *d, int *plus)
{
    int n = 0;
    *plus = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (is_separator(c))
            continue;
        if (c == '+' && n == 0 && !*plus) {
            *plus = 1;
        } else if (is_digit(c) && n < PHONE_E164_MAX) {
            d[n++] = c;
        } else {
            return -1;
        }
    }
    return n;
}

size_t phone_e164(const char *s, size_t len, char *out, size_t cap)
{
    char d[PHONE_E164_MAX];
    int plus;
    int n = keep_digits(s, len, d, &plus);
    const char *prefix;
    if (n < 0)
        return 0;
    if (plus && n >= 8 && n <= 15 && d[0] != '0')
        prefix = "+";
    else if (!plus && n == 10 && d[0] >= '2')
        prefix = "+1";
    else if (!plus && n == 11 && d[0] == '1' && d[1] >= '2')
        prefix = "+";
    else
        return 0;
    size_t plen = prefix[1] ? 2 : 1;
    if ((size_t)n + plen > cap)
        return 0;
    for (size_t i = 0; i < plen; i++)
        out[i] = prefix[i];
    for (int i = 0; i < n; i++)
        out[plen + (size_t)i] = d[i];
    return plen + (size_t)n;
}
