/* pg_value.c — database names and timestamps as steeple takes them (see
 * pg_value.h). */
#include "pg_value.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define NAME_MAX_LEN 63

int pg_value_utc_iso(const char *s, size_t n, char out[PG_VALUE_ISO_LEN])
{
    int Y, M, D, h, m, sec, oh = 0, om = 0, used = 0;
    char frac[16] = "";
    if (n < 22 || sscanf(s, "%4d-%2d-%2d %2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &used) != 6)
        return -1;
    const char *p = s + used;
    if (*p == '.') {
        size_t f = strspn(p + 1, "0123456789");
        if (f > sizeof frac - 2)
            f = sizeof frac - 2;
        frac[0] = '.';
        memcpy(frac + 1, p + 1, f);
        frac[f + 1] = '\0';
        p += 1 + strspn(p + 1, "0123456789");
    }
    int sign = *p == '-' ? -1 : 1;
    if ((*p != '+' && *p != '-') || sscanf(p + 1, "%2d:%2d", &oh, &om) < 1)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
                    .tm_hour = h, .tm_min = m, .tm_sec = sec};
    time_t t = timegm(&tm) - sign * (oh * 3600 + om * 60);
    gmtime_r(&t, &tm);
    snprintf(out, PG_VALUE_ISO_LEN, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return 0;
}

int pg_value_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}
