/* fuzz_csv.c — CSV to COPY text (core/csv.c).
 *
 * Feeds:
 *   1. the whole input to csv_copy with columns phone, first_name, last_name
 *      (max 20, 5 and 5 characters) and max_rows from the first byte;
 *   2. the input split at 0x1E into records and at 0x1F into fields, written
 *      out as CSV with every field quoted (quotes doubled) and records ended
 *      by CRLF or LF (bit 0 of the first byte), then read back by
 *      csv_read_field;
 *   3. the whole input to phone_e164 (core/phone.c), the converter of the
 *      import's phone column.
 * Asserts:
 *   - csv_copy returns a csv_status; on CSV_OK accepted + rejects == rows,
 *     every line of the text is a line number (rising, >= 2), then exactly
 *     three tab-separated values, each \N or an escaped value that is UTF-8,
 *     not empty, within its column's limit, with no raw CR or LF;
 *   - CSV_BINARY exactly when the input holds a NUL byte;
 *   - the written CSV reads back as the same records and fields, with each
 *     record's line number counted from the line breaks written before it;
 *   - a number phone_e164 takes is + and 8 to 15 digits, the first not 0,
 *     with the input's digits at its end, and is taken again as itself. */
#include "csv.h"
#include "fuzz_util.h"
#include "phone.h"

static const struct csv_column COLS[] = {{"phone", 20, NULL}, {"first_name", 5, NULL}, {"last_name", 5, NULL}};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* Unescapes one COPY value in place; returns its length. */
static size_t unescape(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\') {
            FUZZ_CHECK(i + 1 < n, "a lone backslash at the end of a value");
            c = s[++i];
            c = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
            FUZZ_CHECK(c == '\t' || c == '\n' || c == '\r' || c == '\\', "unknown escape");
        }
        s[o++] = c;
    }
    return o;
}

static void check_line(char *line, size_t n, size_t *last)
{
    char *tab = memchr(line, '\t', n);
    FUZZ_CHECK(tab != NULL, "no value after the line number");
    size_t num = 0;
    for (char *p = line; p < tab; p++) {
        FUZZ_CHECK(*p >= '0' && *p <= '9', "line number is not decimal");
        num = num * 10 + (size_t)(*p - '0');
    }
    FUZZ_CHECK(num >= 2 && num > *last, "line numbers must rise from 2");
    *last = num;
    char *p = tab + 1, *end = line + n;
    for (int c = 0; c < 3; c++) {
        char *e = memchr(p, '\t', (size_t)(end - p));
        if (e == NULL)
            e = end;
        FUZZ_CHECK((c == 2) == (e == end), "a line holds exactly three values");
        size_t len = (size_t)(e - p);
        FUZZ_CHECK(memchr(p, '\r', len) == NULL, "a raw CR in a value");
        if (!(len == 2 && memcmp(p, "\\N", 2) == 0)) {
            len = unescape(p, len);
            long chars = csv_utf8_chars(p, len);
            FUZZ_CHECK(len > 0 && chars >= 0 && (size_t)chars <= COLS[c].max_chars,
                       "a value is empty, not UTF-8 or too long");
        }
        p = e + 1;
    }
}

static void check_copy(const uint8_t *data, size_t size)
{
    struct csv_copy out;
    size_t max_rows = size ? data[0] : 0;
    int rc = csv_copy((const char *)data, size, COLS, 3, max_rows, &out);
    FUZZ_CHECK(rc >= CSV_OK && rc <= CSV_NOMEM, "unknown status %d", rc);
    FUZZ_CHECK((rc == CSV_BINARY) == (memchr(data, 0, size) != NULL), "NUL bytes decide CSV_BINARY");
    if (rc == CSV_OK) {
        FUZZ_CHECK(out.accepted + out.nrejects == out.rows && out.rows <= max_rows, "counts");
        size_t last = 0, lines = 0;
        char *s = out.text.data, *end = out.text.len ? s + out.text.len : s;
        while (s < end) {
            char *nl = memchr(s, '\n', (size_t)(end - s));
            FUZZ_CHECK(nl != NULL, "the text ends with a line feed");
            check_line(s, (size_t)(nl - s), &last);
            lines++;
            s = nl + 1;
        }
        FUZZ_CHECK(lines == out.accepted, "one line per accepted record");
    }
    csv_copy_free(&out);
}

/* Writes data as quoted CSV into out (cap bytes at least 2 * size + 8 per
 * field); returns the length. */
static size_t write_csv(const uint8_t *data, size_t size, char *out, int crlf)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 1; i < size; i++) {
        char c = (char)data[i];
        if (c == 0x1E || c == 0x1F) {
            out[o++] = '"';
            if (c == 0x1F) {
                out[o++] = ',';
            } else if (crlf) {
                out[o++] = '\r';
                out[o++] = '\n';
            } else {
                out[o++] = '\n';
            }
            out[o++] = '"';
            continue;
        }
        if (c == '"')
            out[o++] = '"';
        out[o++] = c;
    }
    out[o++] = '"';
    return o;
}

static void check_round_trip(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    char *csv = malloc(4 * size + 8);
    if (csv == NULL)
        abort();
    size_t n = write_csv(data, size, csv, data[0] & 1);
    struct csv_reader r;
    struct csv_field f;
    csv_reader_init(&r, csv, n);
    size_t i = 1, line = 1;
    int rc;
    while ((rc = csv_read_field(&r, &f)) == 1) {
        FUZZ_CHECK(!f.unterminated, "every quote is closed");
        FUZZ_CHECK(f.line == line || f.index > 0, "record line %zu, want %zu", f.line, line);
        size_t start = i;
        while (i < size && data[i] != 0x1E && data[i] != 0x1F)
            i++;
        FUZZ_CHECK(f.len == i - start && memcmp(f.data, data + start, f.len) == 0, "field differs");
        for (size_t k = start; k < i; k++)
            line += data[k] == '\n';
        FUZZ_CHECK(f.last == (i == size || data[i] == 0x1E), "record ends where written");
        if (i < size && data[i] == 0x1E)
            line++;
        i++;
    }
    FUZZ_CHECK(rc == 0 && i >= size, "every field read back");
    csv_reader_free(&r);
    free(csv);
}

static void check_phone(const uint8_t *data, size_t size)
{
    char out[PHONE_E164_MAX], again[PHONE_E164_MAX], digits[PHONE_E164_MAX];
    size_t n = phone_e164((const char *)data, size, out, sizeof out);
    if (n == 0)
        return;
    FUZZ_CHECK(n >= 9 && n <= PHONE_E164_MAX && out[0] == '+' && out[1] != '0', "not E.164");
    size_t d = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] >= '0' && data[i] <= '9') {
            FUZZ_CHECK(d < sizeof digits, "too many digits taken");
            digits[d++] = (char)data[i];
        }
    }
    for (size_t i = 1; i < n; i++)
        FUZZ_CHECK(out[i] >= '0' && out[i] <= '9', "a number holds digits only");
    FUZZ_CHECK(d <= n - 1 && memcmp(out + n - d, digits, d) == 0, "the input's digits end the number");
    FUZZ_CHECK(phone_e164(out, n, again, sizeof again) == n && memcmp(out, again, n) == 0,
               "a number is taken again as itself");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_copy(data, size);
    check_round_trip(data, size);
    check_phone(data, size);
    return 0;
}
