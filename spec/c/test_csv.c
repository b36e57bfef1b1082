/* test_csv.c — CSV fields, UTF-8 and CSV to COPY text (core/csv.c). */
#include "csv.h"
#include "phone.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static const struct csv_column COLS[] = {{"phone", 20, NULL}, {"first_name", 5, NULL}, {"last_name", 5, NULL}};

/* Reads all fields of s as "a|b;c|d;" (| between fields, ; after each
 * record, ! after an unterminated one) with each record's line as "@n". */
static char *fields(const char *s)
{
    static char out[4096];
    struct csv_reader r;
    struct csv_field f;
    size_t n = 0;
    int rc;
    csv_reader_init(&r, s, strlen(s));
    while ((rc = csv_read_field(&r, &f)) == 1) {
        if (f.index == 0)
            n += (size_t)snprintf(out + n, sizeof out - n, "@%zu:", f.line);
        n += (size_t)snprintf(out + n, sizeof out - n, "%.*s%s", (int)f.len, f.data,
                              f.last ? (f.unterminated ? "!;" : ";") : "|");
    }
    csv_reader_free(&r);
    if (rc < 0)
        return NULL;
    out[n] = '\0';
    return out;
}

static int reads(const char *in, const char *want)
{
    const char *got = fields(in);
    if (got && strcmp(got, want) == 0)
        return 1;
    printf("# in %s\n# got  %s\n# want %s\n", in, got ? got : "(nomem)", want);
    return 0;
}

static void plain_records(void)
{
    CHECK(reads("a,b\nc,d\n", "@1:a|b;@2:c|d;"));
    CHECK(reads("a,b\r\nc,d", "@1:a|b;@2:c|d;"));
    CHECK(reads("a,b\rc,d\r", "@1:a|b;@2:c|d;"));
    CHECK(reads("", ""));
    CHECK(reads("a,", "@1:a|;"));
    CHECK(reads(",,", "@1:||;"));
}

static void blank_lines_keep_numbers(void)
{
    CHECK(reads("h\n\n\r\nx\n\ny", "@1:h;@4:x;@6:y;"));
}

static void bom_skipped(void)
{
    CHECK(reads("\xEF\xBB\xBFphone\n1\n", "@1:phone;@2:1;"));
}

static void quoted_fields(void)
{
    CHECK(reads("\"a,b\",\"c\"\"d\"\n", "@1:a,b|c\"d;"));
    CHECK(reads("\"x\ny\",z\nw\n", "@1:x\ny|z;@3:w;"));
    CHECK(reads("\"x\r\ny\"\r\nw", "@1:x\r\ny;@3:w;"));
    CHECK(reads("\"\"\"\"\n", "@1:\";"));
    CHECK(reads("\"\",\"\"", "@1:|;"));
    CHECK(reads("\"ab\"c,d", "@1:abc|d;"));
    CHECK(reads("\"a\"\"b\"c,d", "@1:a\"bc|d;"));
    CHECK(reads("a\"b,c", "@1:a\"b|c;"));
}

static void unterminated_quote(void)
{
    CHECK(reads("a,\"b\nc,d\n", "@1:a|b\nc,d\n!;"));
    CHECK(reads("\"a\"\"b", "@1:a\"b!;"));
}

static void many_commas(void)
{
    size_t n = 100000;
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    if (s == NULL)
        return;
    memset(s, ',', n);
    s[n] = '\0';
    struct csv_reader r;
    struct csv_field f;
    size_t count = 0;
    csv_reader_init(&r, s, n);
    while (csv_read_field(&r, &f) == 1)
        count++;
    CHECK(count == n + 1);
    CHECK(f.last && f.len == 0);
    csv_reader_free(&r);
    free(s);
}

static void utf8(void)
{
    CHECK(csv_utf8_chars("", 0) == 0);
    CHECK(csv_utf8_chars("abc", 3) == 3);
    CHECK(csv_utf8_chars("Jos\xC3\xA9", 5) == 4);
    CHECK(csv_utf8_chars("\xE2\x82\xAC\xF0\x9F\x99\x8F", 7) == 2);
    CHECK(csv_utf8_chars("\xC3", 1) == -1);          /* cut short */
    CHECK(csv_utf8_chars("\xC0\xAF", 2) == -1);      /* overlong */
    CHECK(csv_utf8_chars("\xE0\x80\xAF", 3) == -1);  /* overlong */
    CHECK(csv_utf8_chars("\xED\xA0\x80", 3) == -1);  /* surrogate */
    CHECK(csv_utf8_chars("\xF4\x90\x80\x80", 4) == -1); /* past U+10FFFF */
    CHECK(csv_utf8_chars("\xFF", 1) == -1);
    CHECK(csv_utf8_chars("\x80", 1) == -1);
}

static int copy_of(const char *in, size_t max_rows, struct csv_copy *out)
{
    return csv_copy(in, strlen(in), COLS, 3, max_rows, out);
}

static void copy_text(void)
{
    struct csv_copy out;
    CHECK(copy_of("Last_Name, PHONE ,x,first_name\r\n"
                  "Doe,555-123-4567,ignored, Jane \r\n"
                  "\"O'Neil, Jr\",\"(555) 000-1111\",,\"a\\b\"\r\n"
                  "\"t\tx\",1,,a\\b\r\n",
                  10, &out) == CSV_OK);
    CHECK(out.rows == 3);
    CHECK(out.found[0] && out.found[1] && out.found[2]);
    /* "O'Neil, Jr" is 10 characters: over 5 */
    CHECK(out.nrejects == 1 && out.rejects[0].line == 3 && out.rejects[0].reason == CSV_TOO_LONG &&
          out.rejects[0].column == 2);
    const char *text = "2\t555-123-4567\tJane\tDoe\n"
                       "4\t1\ta\\\\b\tt\\tx\n";
    CHECK(out.accepted == 2);
    CHECK(out.text.len == strlen(text) && memcmp(out.text.data, text, out.text.len) == 0);
    csv_copy_free(&out);
}

static void copy_missing_columns(void)
{
    struct csv_copy out;
    CHECK(copy_of("name,number\nx,1\n", 10, &out) == CSV_OK);
    CHECK(!out.found[0] && !out.found[1] && !out.found[2]);
    CHECK(out.text.len == strlen("2\t\\N\t\\N\t\\N\n"));
    csv_copy_free(&out);
}

static void copy_header_only(void)
{
    struct csv_copy out;
    CHECK(copy_of("\xEF\xBB\xBFphone\r\n", 10, &out) == CSV_OK);
    CHECK(out.found[0] && out.rows == 0 && out.accepted == 0 && out.text.len == 0);
    csv_copy_free(&out);
}

static void copy_refusals(void)
{
    struct csv_copy out;
    CHECK(csv_copy("phone\n\0\n", 8, COLS, 3, 10, &out) == CSV_BINARY);
    csv_copy_free(&out);
    CHECK(copy_of("", 10, &out) == CSV_NO_HEADER);
    csv_copy_free(&out);
    CHECK(copy_of("\n\n", 10, &out) == CSV_NO_HEADER);
    csv_copy_free(&out);
    CHECK(copy_of("ph\xFFone\n1\n", 10, &out) == CSV_NO_HEADER);
    csv_copy_free(&out);
    CHECK(copy_of("\"phone\n1\n", 10, &out) == CSV_NO_HEADER);
    csv_copy_free(&out);
    CHECK(copy_of("phone\n1\n2\n3\n", 2, &out) == CSV_TOO_MANY_ROWS);
    csv_copy_free(&out);
    CHECK(copy_of("phone\n1\n2\n", 2, &out) == CSV_OK);
    csv_copy_free(&out);
}

static void copy_rejects(void)
{
    struct csv_copy out;
    CHECK(copy_of("phone,first_name\n1,\xC3(\n2,ok\n3,\"open\n", 10, &out) == CSV_OK);
    CHECK(out.rows == 3 && out.accepted == 1 && out.nrejects == 2);
    CHECK(out.rejects[0].line == 2 && out.rejects[0].reason == CSV_BAD_ENCODING &&
          out.rejects[0].column == 1);
    CHECK(out.rejects[1].line == 4 && out.rejects[1].reason == CSV_UNTERMINATED);
    CHECK(out.text.len == strlen("3\t2\tok\t\\N\n"));
    csv_copy_free(&out);
}

/* A convert that writes more than it was given room for: refused too. */
static size_t overflowing(const char *s, size_t len, char *out, size_t cap)
{
    return cap + 1;
}

static void copy_converted(void)
{
    static const struct csv_column cols[] = {{"phone", 20, phone_e164}, {"first_name", 5, NULL}};
    struct csv_copy out;
    const char *in = "phone,first_name\n"
                     "(555) 123-4567,Ann\n"     /* 2: converted */
                     "555v123v4567,Bob\n"       /* 3: refused */
                     ",Cy\n"                    /* 4: empty, refused */
                     "555-12,toolongname\n"     /* 5: the name's length first */
                     "\" +1 555\v123 4567 \",\n" /* 6: trimmed, then converted */
                     "555-123-4567\n";          /* 7: the name absent */
    CHECK(csv_copy(in, strlen(in), cols, 2, 10, &out) == CSV_OK);
    CHECK(out.rows == 6 && out.accepted == 3 && out.nrejects == 3);
    CHECK(out.rejects[0].line == 3 && out.rejects[0].reason == CSV_REFUSED && out.rejects[0].column == 0);
    CHECK(out.rejects[1].line == 4 && out.rejects[1].reason == CSV_REFUSED && out.rejects[1].column == 0);
    CHECK(out.rejects[2].line == 5 && out.rejects[2].reason == CSV_TOO_LONG && out.rejects[2].column == 1);
    const char *text = "2\t+15551234567\tAnn\n"
                       "6\t+15551234567\t\\N\n"
                       "7\t+15551234567\t\\N\n";
    CHECK(out.text.len == strlen(text) && memcmp(out.text.data, text, out.text.len) == 0);
    csv_copy_free(&out);

    static const struct csv_column bad[] = {{"phone", 20, overflowing}};
    CHECK(csv_copy("phone\n1\n", 8, bad, 1, 10, &out) == CSV_OK);
    CHECK(out.accepted == 0 && out.nrejects == 1 && out.rejects[0].reason == CSV_REFUSED);
    csv_copy_free(&out);

    /* a converted column the header lacks refuses every record */
    CHECK(csv_copy("number\n5551234567\n", 18, cols, 1, 10, &out) == CSV_OK);
    CHECK(!out.found[0] && out.accepted == 0 && out.nrejects == 1);
    csv_copy_free(&out);
}

static const struct tap_case cases[] = {
    {"plain records, LF, CRLF and CR", plain_records},
    {"blank lines are skipped, line numbers kept", blank_lines_keep_numbers},
    {"a UTF-8 BOM is skipped", bom_skipped},
    {"quoted fields: commas, quotes, line breaks", quoted_fields},
    {"an unterminated quote runs to the end", unterminated_quote},
    {"100,000 commas are 100,001 fields", many_commas},
    {"UTF-8 characters and invalid forms", utf8},
    {"CSV to COPY text: columns by header, trimmed, escaped", copy_text},
    {"columns the header lacks are NULL", copy_missing_columns},
    {"a header alone", copy_header_only},
    {"binary, no header, too many rows", copy_refusals},
    {"rejected records: encoding, unterminated quote", copy_rejects},
    {"converted columns: E.164 numbers, refusals after the other checks", copy_converted},
};

TAP_MAIN(cases)
