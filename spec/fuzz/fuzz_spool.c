/* fuzz_spool.c — the spool's record reader and writer (core/spool*.c; it
 * links those files and the logger only).
 *
 * Feeds: the tail of the input as the content of a segment file (own,
 * w0-0000000001.spool, or an orphan's, w1-…, which worker 0 of 1 adopts), in
 * a tmpfs directory, opened with spool_open: the code the server runs at
 * start-up, which indexes the records from the .done offset and cuts the
 * segment at the first torn or corrupt one. The head of the input decides:
 *   byte 0  bit 0: write a .done file (offset from bytes 1-2), bit 1: make it
 *           malformed, bit 2: the segment is an orphan's, bit 3: flip a byte
 *           of the file after opening (disk corruption before replay), bits
 *           4-7: how many records to mark done before reopening
 *   bytes 1-2: the .done offset; bytes 3-4: where the flip goes
 *   byte 5  bits 0-2: how many records to append (0-7), each a length byte
 *           + payload; bit 3: also mark every other record after those
 *           first ones done (out of order); bit 4: the .done file has a
 *           second line marking records past its offset done (bytes 3-4
 *           as the bitmap, low byte first)
 * Then: peek, append, peek, mark done, close, reopen, peek.
 * Asserts:
 *   - peek returns exactly the records an independent parser (here) finds
 *     from the done offset: magic, length <= SPOOL_MAX_RECORD, within the
 *     file, CRC-32C (bitwise, not table-driven) matching, up to the first
 *     bad one; each with the file's own bytes, so nothing read past the
 *     input and no record with a wrong CRC;
 *   - skipped_bytes is what follows the last good record; pending counts;
 *   - after a flip inside a valid record, neither it nor any record after it
 *     is returned (CRC-32C catches every one-byte change);
 *   - every append completes without error, and the appended records read
 *     back (before and after reopening) equal what was written, in order;
 *   - records marked done (in the .done file's second line, or by
 *     spool_done in any order) are never handed out, also after reopening
 *     (the rest come back, in order), and spool_done refuses an id it never
 *     gave. */
#include "fuzz_util.h"
#include "log.h"
#include "spool.h"
#include "spool_oracle.h"

#include <dirent.h>
#include <event2/event.h>
#include <fcntl.h>

#define MAX_RECS 2048
#define HEADER ORACLE_HEADER

static struct event_base *base;
static char dir[128];

struct span {
    const uint8_t *p;
    size_t len;
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR + 1); /* torn records are logged as warnings: expected here */
    snprintf(dir, sizeof dir, "%s/spool", fuzz_tmpdir());
    base = event_base_new();
    return base ? 0 : -1;
}

/* The records of file[0 .. size) from off on; *stop gets where the valid
 * part ends. Returns the count. */
static size_t parse(const uint8_t *file, size_t size, size_t off, struct span *out, size_t *stop)
{
    size_t n = 0;
    while (off < size && n < MAX_RECS) {
        uint32_t len;
        if (oracle_record(file, size, off, SPOOL_MAX_RECORD, &len) != ORACLE_OK)
            break;
        out[n++] = (struct span){file + off + HEADER, len};
        off += HEADER + len;
    }
    *stop = off;
    return n;
}

static void clear_dir(void)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static int completions, failures;

static void on_appended(void *arg, const char *err)
{
    (void)arg;
    completions++;
    if (err != NULL) {
        fprintf(stderr, "fuzz_spool: append failed: %s\n", err);
        failures++;
    }
}

static struct spool *open_spool(void)
{
    char err[256];
    struct spool *s = spool_open(base, dir, 0, 1, err, sizeof err);
    FUZZ_CHECK(s != NULL, "spool_open: %s", err);
    return s;
}

/* Peeks everything and checks it against want[0 .. nwant). */
static void expect(struct spool *s, const struct span *want, size_t nwant,
                   struct spool_record *got, size_t *ngot, const char *when)
{
    FUZZ_CHECK(spool_peek(s, MAX_RECS, got, ngot) == 0, "%s: spool_peek failed", when);
    FUZZ_CHECK(*ngot == nwant, "%s: peek gave %zu records, want %zu", when, *ngot, nwant);
    FUZZ_CHECK(spool_pending(s) == nwant, "%s: %zu pending, want %zu", when, spool_pending(s),
               nwant);
    for (size_t i = 0; i < nwant; i++)
        FUZZ_CHECK(got[i].len == want[i].len &&
                       (want[i].len == 0 || memcmp(got[i].data, want[i].p, want[i].len) == 0),
                   "%s: record %zu differs (len %zu, want %zu)", when, i, got[i].len,
                   want[i].len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct span want[MAX_RECS + 8], left[MAX_RECS + 8];
    static struct spool_record got[MAX_RECS];
    struct fuzz_in in = {data, size};
    static int marked[MAX_RECS];
    uint8_t flags = fuzz_u8(&in);
    size_t done_off = fuzz_u16(&in), flip_at = fuzz_u16(&in);
    uint8_t more = fuzz_u8(&in);
    size_t nappend = more % 8;
    int sparse = more & 8, file_marks = (more & 16) && (flags & 3) == 1;
    struct span appended[8];
    for (size_t i = 0; i < nappend; i++)
        appended[i].p = fuzz_field(&in, &appended[i].len);
    const uint8_t *file = in.p;
    size_t fsize = in.n;

    clear_dir();
    mkdir(dir, 0700);
    char name[512];
    int worker = flags & 4 ? 1 : 0;
    snprintf(name, sizeof name, "%s/w%d-0000000001.spool", dir, worker);
    fuzz_write_file(name, file, fsize);
    size_t from = 0;
    if (flags & 1) {
        char text[32], dname[512];
        int n = snprintf(text, sizeof text, flags & 2 ? "%zux\n" : "%zu\n", done_off);
        if (file_marks)
            n += snprintf(text + n, sizeof text - (size_t)n, "%02zx%02zx\n", flip_at & 0xFF,
                          flip_at >> 8);
        snprintf(dname, sizeof dname, "%s/w%d-0000000001.done", dir, worker);
        fuzz_write_file(dname, text, (size_t)n);
        from = flags & 2 ? 0 : done_off;
    }

    /* what the reader must find: the records from the offset, less those
     * the second line marks (bit k: the k-th of them) */
    size_t stop = from, nall = from > fsize ? 0 : parse(file, fsize, from, want, &stop);
    FUZZ_CHECK(nall < MAX_RECS, "too many records for this harness");
    for (size_t k = 0; k < nall; k++)
        marked[k] = file_marks && k < 16 && (flip_at >> k & 1);

    struct spool *s = open_spool();
    struct spool_stats st;
    spool_stats(s, &st);
    FUZZ_CHECK(st.skipped_bytes == (from > fsize ? 0 : fsize - stop),
               "skipped %llu bytes, want %zu", (unsigned long long)st.skipped_bytes,
               from > fsize ? 0 : fsize - stop);

    if ((flags & 8) && nall > 0) {
        /* the disk changes one byte of a valid record under the open spool
         * (only there: a flip in the cut-off tail could mend a bad record,
         * which the reopened spool would then rightly find; and only in a
         * record not done, which is never read again) */
        size_t at = from + flip_at % (stop - from), keep = 0;
        /* the record holding the flipped byte (header or payload) is cut,
         * and every record after it with it */
        for (; keep < nall; keep++) {
            size_t start = (size_t)(want[keep].p - file) - HEADER;
            if (start <= at && at < start + HEADER + want[keep].len)
                break;
        }
        if (!marked[keep]) {
            int fd = open(name, O_WRONLY);
            uint8_t b = file[at] ^ 0x5A;
            FUZZ_CHECK(fd >= 0 && pwrite(fd, &b, 1, (off_t)at) == 1, "flip");
            close(fd);
            nall = keep;
        }
    }
    size_t nwant = 0;
    for (size_t k = 0; k < nall; k++)
        if (!marked[k])
            want[nwant++] = want[k];

    size_t ngot;
    expect(s, want, nwant, got, &ngot, "after open");
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_spool: %zu-byte segment from %zu: %zu records, %zu bytes skipped; "
                        "%zu appended, %u done\n",
                fsize, from, nwant, (size_t)st.skipped_bytes, nappend, flags >> 4);

    /* append, wait for durability, read back */
    completions = failures = 0;
    for (size_t i = 0; i < nappend; i++)
        FUZZ_CHECK(spool_append(s, appended[i].p, appended[i].len, on_appended, NULL) == 0,
                   "spool_append refused %zu bytes", appended[i].len);
    while (completions < (int)nappend)
        event_base_loop(base, EVLOOP_ONCE);
    FUZZ_CHECK(failures == 0, "an append failed");
    for (size_t i = 0; i < nappend; i++)
        want[nwant + i] = appended[i];
    size_t total = nwant + nappend;
    expect(s, want, total, got, &ngot, "after appending");

    /* mark the first k done (and with `sparse` every other one after
     * them, the last first); an id never given is refused */
    size_t k = (size_t)(flags >> 4) < total ? (size_t)(flags >> 4) : total;
    static spool_id ids[MAX_RECS + 8];
    static int done_now[MAX_RECS + 8];
    for (size_t i = 0; i < total; i++) {
        ids[i] = got[i].id;
        done_now[i] = i < k || (sparse && (i - k) % 2 == 1);
    }
    for (size_t i = total; i-- > 0;)
        if (done_now[i])
            FUZZ_CHECK(spool_done(s, ids[i]) == 0, "spool_done of a peeked record failed");
    spool_id bogus = total ? got[total - 1].id + 1 : ((spool_id)77 << 32);
    FUZZ_CHECK(spool_done(s, bogus) != 0, "spool_done accepted an id it never gave");
    event_base_loop(base, EVLOOP_NONBLOCK); /* the deferred flush */
    spool_free(s);

    /* reopen: the rest come back, in order */
    size_t nleft = 0;
    for (size_t i = 0; i < total; i++)
        if (!done_now[i])
            left[nleft++] = want[i];
    s = open_spool();
    expect(s, left, nleft, got, &ngot, "after reopening");
    spool_free(s);
    return 0;
}
