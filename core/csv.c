/* csv.c — CSV fields and CSV to COPY text (see csv.h). */
#include "csv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- growable text ------------------------------------------------------- */

/* Makes room for n more bytes. Returns 0, or -1 out of memory. */
static int text_reserve(struct csv_text *t, size_t n)
{
    if (t->cap - t->len >= n)
        return 0;
    size_t cap = t->cap ? t->cap : 256;
    while (cap - t->len < n) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *d = realloc(t->data, cap);
    if (d == NULL)
        return -1;
    t->data = d;
    t->cap = cap;
    return 0;
}

static int text_add(struct csv_text *t, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (text_reserve(t, n) != 0)
        return -1;
    memcpy(t->data + t->len, s, n);
    t->len += n;
    return 0;
}

/* ---- the reader ---------------------------------------------------------- */

void csv_reader_init(struct csv_reader *r, const char *buf, size_t len)
{
    memset(r, 0, sizeof *r);
    r->p = buf;
    r->end = buf + len;
    r->line = 1;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        r->p += 3;
}

void csv_reader_free(struct csv_reader *r)
{
    free(r->scratch);
    r->scratch = NULL;
    r->scap = 0;
}

/* Passes one line break at p (LF, CRLF or CR); 0 when there is none. */
static int skip_break(struct csv_reader *r)
{
    if (r->p < r->end && *r->p == '\r') {
        r->p++;
        if (r->p < r->end && *r->p == '\n')
            r->p++;
    } else if (r->p < r->end && *r->p == '\n') {
        r->p++;
    } else {
        return 0;
    }
    r->line++;
    return 1;
}

static size_t count_lf(const char *s, size_t n)
{
    size_t lines = 0;
    const char *e = s + n;
    while ((s = memchr(s, '\n', (size_t)(e - s))) != NULL) {
        lines++;
        s++;
    }
    return lines;
}

/* Appends to the scratch buffer at *used. Returns 0, or -1. */
static int scratch_add(struct csv_reader *r, size_t *used, const char *s, size_t n)
{
    struct csv_text t = {r->scratch, *used, r->scap};
    if (text_add(&t, s, n) != 0)
        return -1;
    r->scratch = t.data;
    r->scap = t.cap;
    *used = t.len;
    return 0;
}

static int is_stop(char c)
{
    return c == ',' || c == '\n' || c == '\r';
}

/* A quoted field, p just past its opening quote. Returns 0, or -1. */
static int read_quoted(struct csv_reader *r, struct csv_field *f)
{
    const char *start = r->p;
    size_t used = 0;
    int copied = 0;
    for (;;) {
        const char *q = memchr(r->p, '"', (size_t)(r->end - r->p));
        if (q == NULL) { /* never closes: the rest of the input */
            r->line += count_lf(r->p, (size_t)(r->end - r->p));
            if (copied && scratch_add(r, &used, r->p, (size_t)(r->end - r->p)) != 0)
                return -1;
            f->data = copied ? r->scratch : start;
            f->len = copied ? used : (size_t)(r->end - start);
            r->p = r->end;
            f->unterminated = 1;
            return 0;
        }
        r->line += count_lf(r->p, (size_t)(q - r->p));
        if (q + 1 < r->end && q[1] == '"') { /* "" is one quote */
            if (!copied && scratch_add(r, &used, start, (size_t)(q - start)) != 0)
                return -1;
            if (copied && scratch_add(r, &used, r->p, (size_t)(q - r->p)) != 0)
                return -1;
            if (scratch_add(r, &used, "\"", 1) != 0)
                return -1;
            copied = 1;
            r->p = q + 2;
            continue;
        }
        /* the closing quote; anything up to the separator belongs to the field */
        const char *after = q + 1, *s = after;
        while (s < r->end && !is_stop(*s))
            s++;
        if (s > after || copied) {
            if (!copied && scratch_add(r, &used, start, (size_t)(q - start)) != 0)
                return -1;
            if (copied && scratch_add(r, &used, r->p, (size_t)(q - r->p)) != 0)
                return -1;
            if (scratch_add(r, &used, after, (size_t)(s - after)) != 0)
                return -1;
            f->data = r->scratch;
            f->len = used;
        } else {
            f->data = start;
            f->len = (size_t)(q - start);
        }
        r->p = s;
        return 0;
    }
}

int csv_read_field(struct csv_reader *r, struct csv_field *f)
{
    if (!r->in_record) {
        while (skip_break(r)) /* blank lines are no records */
            ;
        if (r->p >= r->end)
            return 0;
        r->in_record = 1;
        r->record_line = r->line;
        f->index = 0;
    } else {
        f->index++;
    }
    f->line = r->record_line;
    f->unterminated = 0;
    f->last = 0;
    if (r->p < r->end && *r->p == '"') {
        r->p++;
        if (read_quoted(r, f) != 0)
            return -1;
    } else {
        const char *s = r->p;
        while (s < r->end && !is_stop(*s))
            s++;
        f->data = r->p;
        f->len = (size_t)(s - r->p);
        r->p = s;
    }
    if (r->p < r->end && *r->p == ',') {
        r->p++;
        return 1;
    }
    skip_break(r); /* or the end of the input */
    f->last = 1;
    r->in_record = 0;
    return 1;
}

/* ---- UTF-8 --------------------------------------------------------------- */

long csv_utf8_chars(const char *str, size_t len)
{
    if (len == 0) /* str may be NULL then */
        return 0;
    const unsigned char *s = (const unsigned char *)str, *e = s + len;
    long n = 0;
    while (s < e) {
        unsigned c = *s;
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            s++;
            n++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return -1;
        }
        if ((size_t)(e - s) <= k)
            return -1;
        for (size_t i = 1; i <= k; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return -1;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        s += k + 1;
        n++;
    }
    return n;
}

/* ---- CSV to COPY text ---------------------------------------------------- */

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* Appends s in COPY text form: backslash, tab, LF and CR escaped. */
static int add_escaped(struct csv_text *t, const char *s, size_t n)
{
    if (text_reserve(t, 2 * n) != 0)
        return -1;
    char *o = t->data + t->len;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            *o++ = '\\';
            c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
        }
        *o++ = c;
    }
    t->len = (size_t)(o - t->data);
    return 0;
}

static int add_reject(struct csv_copy *out, size_t line, enum csv_reason reason, int column)
{
    if (out->nrejects == out->rcap) {
        size_t cap = out->rcap ? out->rcap * 2 : 64;
        struct csv_reject *r = realloc(out->rejects, cap * sizeof *r);
        if (r == NULL)
            return -1;
        out->rejects = r;
        out->rcap = cap;
    }
    out->rejects[out->nrejects++] = (struct csv_reject){line, reason, column};
    return 0;
}

/* Reads the header: which field holds each column (-1: none). Returns a
 * csv_status. */
static int read_header(struct csv_reader *r, const struct csv_column *cols, int ncols,
                       long *where, struct csv_copy *out)
{
    struct csv_field f;
    for (int c = 0; c < ncols; c++)
        where[c] = -1;
    int rc;
    do {
        rc = csv_read_field(r, &f);
        if (rc < 0)
            return CSV_NOMEM;
        if (rc == 0 || f.unterminated || csv_utf8_chars(f.data, f.len) < 0)
            return CSV_NO_HEADER;
        const char *s = f.data;
        size_t n = f.len;
        trim(&s, &n);
        for (int c = 0; c < ncols; c++) {
            if (where[c] < 0 && strlen(cols[c].name) == n && strncasecmp(s, cols[c].name, n) == 0) {
                where[c] = (long)f.index;
                out->found[c] = 1;
            }
        }
    } while (!f.last);
    return CSV_OK;
}

/* Checks a record's values and writes its line. Returns 0, or -1 out of
 * memory. */
static int finish_record(struct csv_copy *out, const struct csv_column *cols, int ncols,
                         size_t line, int unterminated)
{
    char converted[CSV_MAX_COLUMNS][CSV_CONVERT_MAX];
    size_t clen[CSV_MAX_COLUMNS];
    if (unterminated)
        return add_reject(out, line, CSV_UNTERMINATED, -1);
    for (int c = 0; c < ncols; c++) {
        long chars = csv_utf8_chars(out->value[c].data, out->value[c].len);
        if (chars < 0)
            return add_reject(out, line, CSV_BAD_ENCODING, c);
        if ((size_t)chars > cols[c].max_chars)
            return add_reject(out, line, CSV_TOO_LONG, c);
    }
    for (int c = 0; c < ncols; c++) {
        if (cols[c].convert == NULL)
            continue;
        clen[c] = cols[c].convert(out->value[c].data ? out->value[c].data : "", out->value[c].len,
                                  converted[c], sizeof converted[c]);
        if (clen[c] == 0 || clen[c] > sizeof converted[c])
            return add_reject(out, line, CSV_REFUSED, c);
    }
    char num[24];
    int n = 0;
    for (size_t v = line; v > 0 || n == 0; v /= 10)
        num[n++] = (char)('0' + v % 10);
    if (text_reserve(&out->text, (size_t)n) != 0)
        return -1;
    while (n > 0)
        out->text.data[out->text.len++] = num[--n];
    for (int c = 0; c < ncols; c++) {
        const char *s = cols[c].convert ? converted[c] : out->value[c].data;
        size_t len = cols[c].convert ? clen[c] : out->value[c].len;
        int rc = text_add(&out->text, "\t", 1);
        if (rc == 0 && len == 0)
            rc = text_add(&out->text, "\\N", 2);
        else if (rc == 0)
            rc = add_escaped(&out->text, s, len);
        if (rc != 0)
            return -1;
    }
    out->accepted++;
    return text_add(&out->text, "\n", 1);
}

static int read_records(struct csv_reader *r, const struct csv_column *cols, int ncols,
                        const long *where, size_t max_rows, struct csv_copy *out)
{
    struct csv_field f;
    int unterminated = 0, rc;
    while ((rc = csv_read_field(r, &f)) == 1) {
        if (f.index == 0) {
            if (++out->rows > max_rows)
                return CSV_TOO_MANY_ROWS;
            for (int c = 0; c < ncols; c++)
                out->value[c].len = 0;
            unterminated = 0;
        }
        unterminated |= f.unterminated;
        for (int c = 0; c < ncols; c++) {
            if (where[c] == (long)f.index) {
                const char *s = f.data;
                size_t n = f.len;
                trim(&s, &n);
                if (text_add(&out->value[c], s, n) != 0)
                    return CSV_NOMEM;
            }
        }
        if (f.last && finish_record(out, cols, ncols, f.line, unterminated) != 0)
            return CSV_NOMEM;
    }
    return rc < 0 ? CSV_NOMEM : CSV_OK;
}

int csv_copy(const char *buf, size_t len, const struct csv_column *cols, int ncols,
             size_t max_rows, struct csv_copy *out)
{
    memset(out, 0, sizeof *out);
    if (ncols < 0 || ncols > CSV_MAX_COLUMNS)
        abort();
    if (memchr(buf, '\0', len) != NULL)
        return CSV_BINARY;
    struct csv_reader r;
    long where[CSV_MAX_COLUMNS];
    csv_reader_init(&r, buf, len);
    int rc = read_header(&r, cols, ncols, where, out);
    if (rc == CSV_OK)
        rc = read_records(&r, cols, ncols, where, max_rows, out);
    csv_reader_free(&r);
    return rc;
}

void csv_copy_free(struct csv_copy *out)
{
    free(out->text.data);
    free(out->rejects);
    for (int c = 0; c < CSV_MAX_COLUMNS; c++)
        free(out->value[c].data);
    memset(out, 0, sizeof *out);
}
