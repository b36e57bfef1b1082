/* phone.h — phone numbers as people write them, to E.164. Free of Lua.
 *
 * The rules the contacts import applies to its phone column:
 *  - spaces, tabs, line breaks, form feeds, vertical tabs, parentheses,
 *    dots and dashes are dropped, wherever they are;
 *  - what is left must then be, exactly:
 *      + and 8 to 15 digits, the first not 0      → kept as it is
 *      10 digits, the first 2 to 9                → +1 in front (North America)
 *      1 and 10 digits, the second 2 to 9         → + in front
 *  - anything else (letters, other signs, other lengths, an empty value)
 *    is no number. */
#ifndef STEEPLE_PHONE_H
#define STEEPLE_PHONE_H

#include <stddef.h>

/* The longest E.164 number: + and 15 digits. */
#define PHONE_E164_MAX 16

/* Writes the E.164 form of s[0..len) to out, which has room for cap bytes
 * (no NUL is written). Returns its length (9 to PHONE_E164_MAX), or 0 when s
 * is no number by the rules above or cap is too small. s may hold any bytes;
 * it is read only within len. */
size_t phone_e164(const char *s, size_t len, char *out, size_t cap) __attribute__((warn_unused_result));

#endif
