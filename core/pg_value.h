/* pg_value.h — PostgreSQL text that steeple checks or rewrites before a
 * script sees it: database names and timestamps. Free of Lua. */
#ifndef STEEPLE_PG_VALUE_H
#define STEEPLE_PG_VALUE_H

#include <stddef.h>

#define PG_VALUE_ISO_LEN 64 /* room for pg_value_utc_iso's output */

/* Writes PostgreSQL's ISO output of a timestamptz, s (n bytes, NUL after
 * them) in the form "YYYY-MM-DD HH:MM:SS[.f]+HH[:MM]", to out as UTC ISO
 * 8601 "YYYY-MM-DDTHH:MM:SS[.f]Z". Returns 0, or -1 when s has another form
 * (infinity, a BC date): out is then not written. */
int pg_value_utc_iso(const char *s, size_t n, char out[PG_VALUE_ISO_LEN]);

/* Whether s (n bytes) is a database name the core accepts: 1 to 63
 * letters, digits, '_' and '-'. */
int pg_value_name_ok(const char *s, size_t n);

#endif
