/* csv.h — CSV (RFC 4180 and what spreadsheets really write) to PostgreSQL
 * COPY text. Free of Lua.
 *
 * The reader takes fields one at a time from a buffer: fields separated by
 * commas, records by LF, CRLF or a lone CR; a field that starts with a quote
 * runs to the closing quote, with "" for a quote and commas and line breaks
 * kept; text after a closing quote is kept too ("ab"c reads abc).
 * A UTF-8 byte order mark at the start is skipped; blank lines are no
 * records. Each record knows the line of the file it starts on (1-based),
 * whatever line breaks its quoted fields hold. Work is linear in the input:
 * a record of 100,000 commas is 100,001 empty fields, nothing more. */
#ifndef STEEPLE_CSV_H
#define STEEPLE_CSV_H

#include <stddef.h>

struct csv_reader {
    const char *p, *end;
    size_t line;        /* the line p is on */
    size_t record_line; /* the line the current record started on */
    int in_record;      /* 0 before a record's first field */
    char *scratch;      /* unquoted text of fields with "" or text after the quote */
    size_t scap;
};

struct csv_field {
    const char *data; /* valid until the next call */
    size_t len;
    size_t line;       /* where the record starts */
    size_t index;      /* 0-based place in the record */
    int last;          /* the record ends with this field */
    int unterminated;  /* a quote that never closes: the field runs to the end */
};

void csv_reader_init(struct csv_reader *r, const char *buf, size_t len);
/* The next field: 1, or 0 at the end of the input, or -1 out of memory. */
int csv_read_field(struct csv_reader *r, struct csv_field *f) __attribute__((warn_unused_result));
void csv_reader_free(struct csv_reader *r);

/* ---- a file to COPY text ------------------------------------------------ */

#define CSV_MAX_COLUMNS 8

enum csv_status {
    CSV_OK = 0,
    CSV_BINARY,        /* a NUL byte: not a text file */
    CSV_NO_HEADER,     /* empty, or a header that is not UTF-8 */
    CSV_TOO_MANY_ROWS, /* more records than max_rows */
    CSV_NOMEM,
};

enum csv_reason {
    CSV_TOO_LONG = 1,     /* a column's value over its max_chars */
    CSV_BAD_ENCODING,     /* a column's value is not UTF-8 */
    CSV_UNTERMINATED,     /* a quote that never closes */
    CSV_REFUSED,          /* a column's convert refused its value */
};

/* The most bytes a convert may write for one value. */
#define CSV_CONVERT_MAX 32

/* Turns a column's value (trimmed, UTF-8, within max_chars; empty when the
 * cell is) into what COPY receives: writes at most cap bytes to out, no NUL,
 * and returns their number, or 0 to refuse the value and reject its record.
 * phone_e164 (phone.h) is one. */
typedef size_t csv_convert_fn(const char *s, size_t len, char *out, size_t cap);

struct csv_column {
    const char *name;  /* matched against the header, trimmed, case-insensitive */
    size_t max_chars;  /* in characters (code points) */
    csv_convert_fn *convert; /* NULL: the value as it is */
};

struct csv_reject {
    size_t line;
    enum csv_reason reason;
    int column; /* CSV_TOO_LONG, CSV_BAD_ENCODING, CSV_REFUSED: which column */
};

struct csv_text {
    char *data;
    size_t len, cap;
};

struct csv_copy {
    struct csv_text text;      /* "line\tcol1\tcol2...\n" per accepted record */
    struct csv_reject *rejects;
    size_t nrejects, rcap;
    size_t rows;               /* data records (accepted and rejected) */
    size_t accepted;
    int found[CSV_MAX_COLUMNS]; /* the header has column i */
    struct csv_text value[CSV_MAX_COLUMNS];
};

/* Reads a CSV file with a header row and writes, for each data record, the
 * line number and the requested columns (ncols <= CSV_MAX_COLUMNS) in COPY
 * text format: values trimmed of spaces and tabs, escaped, \N when empty or
 * when the header lacks the column; a column with a convert gets what it
 * returns instead. A record with a value that is not UTF-8 or over its
 * column's max_chars, or with an unterminated quote, or (those checks passed
 * for every column) a value its column's convert refuses, is left out and
 * listed in out->rejects with the first such reason. Other columns are
 * ignored.
 *
 * out is initialized here; call csv_copy_free on it whatever the result.
 * Returns a csv_status. */
int csv_copy(const char *buf, size_t len, const struct csv_column *cols, int ncols,
             size_t max_rows, struct csv_copy *out) __attribute__((warn_unused_result));
void csv_copy_free(struct csv_copy *out);

/* The number of UTF-8 characters in s, or -1 when s is not UTF-8
 * (overlong forms, surrogates and code points past U+10FFFF are not). */
long csv_utf8_chars(const char *s, size_t len);

#endif
