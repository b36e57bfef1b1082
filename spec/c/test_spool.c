/* test_spool.c — the durable spool: group commit, replay, progress, torn and
 * corrupt records, orphans, write failures, cancellation and shutdown. */
#include "spool.h"
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------- */

struct waiter {
    int calls;
    int ok;
    char err[128];
};

static int completed; /* callbacks seen, all waiters */

static void on_done(void *arg, const char *err)
{
    struct waiter *w = arg;
    w->calls++;
    w->ok = err == NULL;
    snprintf(w->err, sizeof w->err, "%s", err ? err : "");
    completed++;
}

/* Runs the loop until `target` callbacks have come (at most ~10 s). */
static int wait_for(struct event_base *base, int target)
{
    for (int i = 0; i < 1000 && completed < target; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return completed >= target;
}

/* Runs what is ready now (the deferred progress flush). */
static void run_ready(struct event_base *base)
{
    event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Payload i: 4..303 bytes derived from i. */
static size_t payload(int i, unsigned char buf[400])
{
    size_t len = 4 + (size_t)(i * 37) % 300;
    for (size_t k = 0; k < len; k++)
        buf[k] = (unsigned char)(i * 31 + (int)k * 7);
    return len;
}

static int append_payload(struct spool *s, int i, struct waiter *w)
{
    unsigned char buf[400];
    size_t len = payload(i, buf);
    return spool_append(s, buf, len, on_done, w);
}

/* Appends payload i and waits until it is durable; returns 1 if it is. */
static int append_sync(struct spool *s, struct event_base *base, int i)
{
    struct waiter w = {0};
    if (append_payload(s, i, &w) != 0)
        return 0;
    return wait_for(base, completed + 1) && w.ok;
}

static char dir_buf[128];

static const char *new_dir(void)
{
    char tmpl[] = "/tmp/spool-test-XXXXXX";
    if (mkdtemp(tmpl) == NULL)
        abort();
    snprintf(dir_buf, sizeof dir_buf, "%s/spool", tmpl); /* spool_open creates it */
    return dir_buf;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_dir(const char *dir)
{
    char parent[128];
    snprintf(parent, sizeof parent, "%s", dir);
    *strrchr(parent, '/') = '\0';
    nftw(parent, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static struct spool *open_w(struct event_base *base, const char *dir, int worker, int nworkers)
{
    char err[256] = "";
    struct spool *s = spool_open(base, dir, worker, nworkers, err, sizeof err);
    if (s == NULL)
        printf("# spool_open: %s\n", err);
    return s;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Files in dir named prefix…suffix; the last one's path goes to last[512]. */
static int count_files(const char *dir, const char *prefix, const char *suffix, char *last)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && ends_with(e->d_name, suffix)) {
            n++;
            if (last && snprintf(last, 512, "%s/%s", dir, e->d_name) >= 512)
                abort();
        }
    if (d)
        closedir(d);
    return n;
}

/* Checks that peek hands out exactly payloads want[0..n), in order. */
static int peek_is(struct spool *s, const int *want, size_t n)
{
    struct spool_record recs[1000];
    size_t got;
    if (spool_peek(s, 1000, recs, &got) != 0 || got != n) {
        printf("# peek: %zu records, want %zu\n", got, n);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char buf[400];
        size_t len = payload(want[i], buf);
        if (recs[i].len != len || memcmp(recs[i].data, buf, len) != 0) {
            printf("# peek: record %zu is not payload %d\n", i, want[i]);
            return 0;
        }
    }
    return 1;
}

static void range(int *v, int from, int n)
{
    for (int i = 0; i < n; i++)
        v[i] = from + i;
}

/* Marks the first n peeked records done (ids in recs). */
static void done_first(struct spool *s, size_t n)
{
    struct spool_record recs[1000];
    size_t got;
    CHECK(spool_peek(s, n, recs, &got) == 0 && got == n);
    for (size_t i = 0; i < got; i++)
        CHECK(spool_done(s, recs[i].id) == 0);
}

/* ---- cases ---------------------------------------------------------------- */

static void crc32c_check_value(void)
{
    CHECK(spool_crc32c("123456789", 9) == 0xE3069283u);
    CHECK(spool_crc32c("", 0) == 0);
}

static void group_commit_and_replay_in_order(void)
{
    enum { N = 500 };
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    static struct waiter w[N];
    memset(w, 0, sizeof w);
    completed = 0;
    for (int i = 0; i < N; i++) /* a burst from N "requests" */
        CHECK(append_payload(s, i, &w[i]) == 0);
    CHECK(wait_for(base, N));
    int ok = 0;
    for (int i = 0; i < N; i++)
        ok += w[i].calls == 1 && w[i].ok;
    CHECK(ok == N);
    struct spool_stats st;
    spool_stats(s, &st);
    printf("# %d appends, %llu fsyncs\n", N, (unsigned long long)st.fsyncs);
    CHECK(st.fsyncs >= 1 && st.fsyncs <= N / 10);
    CHECK(st.pending == N && spool_pending(s) == N && st.files == 1);
    int want[N];
    range(want, 0, N);
    CHECK(peek_is(s, want, N));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == N);
    CHECK(s && peek_is(s, want, N));
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void done_records_are_not_replayed(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    completed = 0;
    for (int i = 0; i < 20; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    struct spool_record recs[20];
    size_t n;
    CHECK(spool_peek(s, 20, recs, &n) == 0 && n == 20);
    for (int i = 0; i < 5; i++)
        CHECK(spool_done(s, recs[i].id) == 0);
    CHECK(spool_done(s, recs[10].id) == 0 && spool_done(s, recs[12].id) == 0);
    CHECK(spool_done(s, recs[12].id) == 0); /* again: harmless */
    CHECK(spool_pending(s) == 13);
    int live[13] = {5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 18, 19};
    CHECK(peek_is(s, live, 13));
    CHECK(peek_is(s, live, 13)); /* peek does not mark */
    spool_free(s);
    /* progress persists: 0..4 below the offset, 10 and 12 as marks past it */
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == 13 && peek_is(s, live, 13));
    CHECK(spool_done(s, UINT64_C(0x7777) << 32) == -1 && errno == ENOENT);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

/* The text of the only .done file in dir ("" when there is none). */
static void read_done(const char *dir, char *text, size_t cap)
{
    char path[512];
    text[0] = '\0';
    if (count_files(dir, "w0-", ".done", path) != 1)
        return;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    size_t n = fread(text, 1, cap - 1, f);
    text[n] = '\0';
    fclose(f);
}

static void write_done(const char *dir, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/w0-0000000001.done", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

/* Offset of payload i's frame in a segment that holds payloads 0, 1, ... */
static unsigned long frame_at(int i)
{
    unsigned long off = 0;
    unsigned char buf[400];
    for (int k = 0; k < i; k++)
        off += 12 + payload(k, buf);
    return off;
}

static void done_file_format(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    completed = 0;
    for (int i = 0; i < 12; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    struct spool_record recs[12];
    size_t n;
    CHECK(s && spool_peek(s, 12, recs, &n) == 0 && n == 12);
    /* 0 and 1 below the offset; 3, 4 and 11 past it: bits 1, 2 and 9 from record 2 */
    int marked[] = {0, 1, 3, 4, 11};
    for (size_t i = 0; i < sizeof marked / sizeof *marked; i++)
        CHECK(spool_done(s, recs[marked[i]].id) == 0);
    run_ready(base);
    char text[256], want[256];
    read_done(dir, text, sizeof text);
    snprintf(want, sizeof want, "%lu\n0602\n", frame_at(2));
    CHECK(strcmp(text, want) == 0);
    if (strcmp(text, want) != 0)
        printf("# .done: \"%s\", want \"%s\"\n", text, want);
    spool_free(s);
    int left[] = {2, 5, 6, 7, 8, 9, 10};
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == 7 && peek_is(s, left, 7));
    spool_free(s);
    /* the one-line file of earlier versions: everything from the offset */
    snprintf(text, sizeof text, "%lu\n", frame_at(3));
    write_done(dir, text);
    int from3[9] = {3, 4, 5, 6, 7, 8, 9, 10, 11};
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == 9 && peek_is(s, from3, 9));
    spool_free(s);
    /* marks that cannot be read are ignored: those records come back */
    const char *bad[] = {"0g\n", "060\n", "06", "0602\nxx\n", "\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(text, sizeof text, "%lu\n%s", frame_at(3), bad[i]);
        write_done(dir, text);
        s = open_w(base, dir, 0, 1);
        CHECK(s && spool_pending(s) == 9 && peek_is(s, from3, 9));
        spool_free(s);
    }
    /* marks past the last record, and every record marked: the segment goes */
    snprintf(text, sizeof text, "%lu\n%s\n", frame_at(3), "ffffffff");
    write_done(dir, text);
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == 0);
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 0);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void peek_from_pages_on(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    completed = 0;
    for (int i = 0; i < 6; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    for (int i = 6; i < 10; i++)
        CHECK(append_sync(s, base, i)); /* a second segment */
    struct spool_record recs[10];
    size_t n;
    CHECK(spool_peek(s, 10, recs, &n) == 0 && n == 10);
    spool_id ids[10];
    for (int i = 0; i < 10; i++)
        ids[i] = recs[i].id;
    for (int i = 1; i < 10; i++)
        CHECK(ids[i] > ids[i - 1]);
    CHECK(spool_done(s, ids[4]) == 0 && spool_done(s, ids[7]) == 0);
    /* pages of 3 from the start: 0 1 2 | 3 5 6 | 8 9 | - */
    int want[] = {0, 1, 2, 3, 5, 6, 8, 9};
    size_t got = 0, pages = 0;
    spool_id from = 0;
    for (;;) {
        CHECK(spool_peek_from(s, from, 3, recs, &n) == 0);
        if (n == 0)
            break;
        pages++;
        for (size_t k = 0; k < n && got < 8; k++, got++) {
            unsigned char buf[400];
            size_t len = payload(want[got], buf);
            CHECK(recs[k].id == ids[want[got]] && recs[k].len == len &&
                  memcmp(recs[k].data, buf, len) == 0);
        }
        from = recs[n - 1].id + 1;
    }
    CHECK(got == 8 && pages == 3);
    CHECK(spool_peek_from(s, ids[6], 10, recs, &n) == 0 && n == 3 && recs[0].id == ids[6]);
    CHECK(spool_peek_from(s, ids[9] + 1, 10, recs, &n) == 0 && n == 0);
    CHECK(spool_peek_from(s, 0, 10, recs, &n) == 0 && n == 8);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void finished_segments_are_deleted(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    completed = 0;
    for (int i = 0; i < 10; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    for (int i = 10; i < 15; i++)
        CHECK(append_sync(s, base, i)); /* a second, active segment */
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 2);
    done_first(s, 15);
    run_ready(base);
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 1); /* the active one stays */
    CHECK(count_files(dir, "w0-", ".done", NULL) <= 1);
    struct spool_stats st;
    spool_stats(s, &st);
    CHECK(st.files == 1 && st.pending == 0 && st.pending_bytes == 0);
    spool_free(s); /* no longer appended to: it goes too */
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 0);
    CHECK(count_files(dir, "w0-", ".done", NULL) == 0);
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == 0);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void torn_tail_is_never_handed_out(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    completed = 0;
    for (int i = 0; i < 5; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);
    char path[512];
    CHECK(count_files(dir, "w0-", ".spool", path) == 1);
    struct stat st;
    CHECK(stat(path, &st) == 0 && truncate(path, st.st_size - 3) == 0);
    s = open_w(base, dir, 0, 1);
    int want[6] = {0, 1, 2, 3, 4};
    CHECK(s && spool_pending(s) == 4 && peek_is(s, want, 4));
    unsigned char buf[400];
    struct spool_stats ss;
    spool_stats(s, &ss);
    CHECK(ss.skipped_bytes == 12 + payload(4, buf) - 3);
    CHECK(append_sync(s, base, 5)); /* goes to a new segment, not after the tear */
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 2);
    CHECK(stat(path, &st) == 0 && (size_t)st.st_size == ss.skipped_bytes +
          (12 + payload(0, buf)) + (12 + payload(1, buf)) + (12 + payload(2, buf)) +
          (12 + payload(3, buf)));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    want[4] = 5;
    CHECK(s && spool_pending(s) == 5 && peek_is(s, want, 5));
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

/* A corrupt record ends its segment's valid part: it and every record after
 * it in that segment are never handed out; later segments still are. */
static void corrupt_record_ends_its_segment(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    completed = 0;
    for (int i = 0; i < 5; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);
    char first[512];
    CHECK(count_files(dir, "w0-", ".spool", first) == 1);
    s = open_w(base, dir, 0, 1);
    for (int i = 5; i < 7; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);

    unsigned char buf[400];
    off_t off = (off_t)(12 + payload(0, buf) + 12 + payload(1, buf) + 12 + 1);
    int fd = open(first, O_RDWR);
    unsigned char c;
    CHECK(pread(fd, &c, 1, off) == 1);
    c ^= 0x40;
    CHECK(pwrite(fd, &c, 1, off) == 1);
    close(fd);

    s = open_w(base, dir, 0, 1);
    int want[4] = {0, 1, 5, 6};
    CHECK(s && spool_pending(s) == 4 && peek_is(s, want, 4));
    struct spool_stats st;
    spool_stats(s, &st);
    size_t bad = 0;
    for (int i = 2; i < 5; i++)
        bad += 12 + payload(i, buf);
    CHECK(st.skipped_bytes == bad);
    done_first(s, 4);
    run_ready(base);
    /* a finished segment with unreadable bytes is kept aside, not deleted */
    CHECK(count_files(dir, "w0-", ".spool.corrupt", NULL) == 1);
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 0);
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    CHECK(s && spool_pending(s) == 0);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void too_large_is_refused(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    unsigned char *big = calloc(1, SPOOL_MAX_RECORD + 1);
    struct waiter w = {0};
    completed = 0;
    errno = 0;
    CHECK(spool_append(s, big, SPOOL_MAX_RECORD + 1, on_done, &w) == -1 && errno == EMSGSIZE);
    big[SPOOL_MAX_RECORD - 1] = 0x5a;
    CHECK(spool_append(s, big, SPOOL_MAX_RECORD, on_done, &w) == 0);
    CHECK(wait_for(base, 1) && w.calls == 1 && w.ok); /* the refused one never calls back */
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    struct spool_record r;
    size_t n;
    CHECK(s && spool_peek(s, 1, &r, &n) == 0 && n == 1 && r.len == SPOOL_MAX_RECORD &&
          memcmp(r.data, big, SPOOL_MAX_RECORD) == 0);
    spool_free(s);
    free(big);
    event_base_free(base);
    rm_dir(dir);
}

static void orphans_are_adopted_by_worker_0(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    completed = 0;
    struct spool *s = open_w(base, dir, 0, 4);
    CHECK(append_sync(s, base, 0) && append_sync(s, base, 1));
    spool_free(s);
    s = open_w(base, dir, 3, 4);
    for (int i = 2; i < 5; i++)
        CHECK(append_sync(s, base, i));
    spool_free(s);

    s = open_w(base, dir, 1, 2); /* only worker 0 adopts */
    CHECK(s && spool_pending(s) == 0);
    spool_free(s);

    s = open_w(base, dir, 0, 2);
    int want[6] = {0, 1, 2, 3, 4, 5};
    CHECK(s && peek_is(s, want, 5));
    char err[256] = "";
    struct spool *w3 = spool_open(base, dir, 3, 4, err, sizeof err);
    CHECK(w3 == NULL && strstr(err, "in use") != NULL); /* worker 0 holds them now */
    CHECK(append_sync(s, base, 5)); /* appended to worker 0's own segment */
    CHECK(count_files(dir, "w3-", ".spool", NULL) == 1);
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 2);
    CHECK(peek_is(s, want, 6));
    done_first(s, 6);
    run_ready(base);
    CHECK(count_files(dir, "w3-", ".spool", NULL) == 0);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

/* Appends payloads from..from+n in one burst after arming a fault; the
 * failed ones must be a prefix (one batch) carrying the errno text. Adds the
 * durable ones to want; returns how many failed. */
static int faulty_burst(struct spool *s, struct event_base *base, enum spool_fault where,
                        int err, int from, int n, int *want, size_t *nwant)
{
    struct waiter w[20] = {{0}};
    spool_set_fault(s, where, err);
    int target = completed + n, failed = 0;
    for (int i = 0; i < n; i++)
        CHECK(append_payload(s, from + i, &w[i]) == 0);
    CHECK(wait_for(base, target));
    for (int i = 0; i < n; i++) {
        CHECK(w[i].calls == 1);
        if (!w[i].ok) {
            CHECK(i == failed); /* a prefix */
            CHECK(strcmp(w[i].err, strerror(err)) == 0);
            failed++;
        } else {
            want[(*nwant)++] = from + i;
        }
    }
    CHECK(failed >= 1);
    return failed;
}

static void failed_batches_are_never_handed_out(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    int want[100];
    size_t n = 0;
    completed = 0;
    /* fails the very first batch of a fresh segment (the file is removed) */
    faulty_burst(s, base, SPOOL_FAULT_WRITE, EIO, 0, 20, want, &n);
    CHECK(append_sync(s, base, 20));
    want[n++] = 20;
    /* fails after every byte was written (fdatasync): truncated back */
    faulty_burst(s, base, SPOOL_FAULT_SYNC, ENOSPC, 21, 20, want, &n);
    CHECK(append_sync(s, base, 41));
    want[n++] = 41;
    /* fails half-written in a segment with durable records: truncated back */
    CHECK(append_sync(s, base, 42));
    want[n++] = 42;
    faulty_burst(s, base, SPOOL_FAULT_WRITE, ENOSPC, 43, 20, want, &n);
    CHECK(append_sync(s, base, 63));
    want[n++] = 63;
    struct spool_stats st;
    spool_stats(s, &st);
    CHECK(st.failed_batches == 3);
    CHECK(peek_is(s, want, n));
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    CHECK(s && peek_is(s, want, n));
    spool_stats(s, &st);
    CHECK(st.skipped_bytes == 0); /* the failed bytes are gone, not merely skipped */
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void cancelled_appends_stay_silent_but_durable(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    struct waiter gone = {0}, here = {0};
    completed = 0;
    CHECK(append_payload(s, 0, &gone) == 0);
    spool_cancel(s, &gone);
    CHECK(append_payload(s, 1, &here) == 0);
    CHECK(wait_for(base, 1) && here.ok);
    CHECK(gone.calls == 0 && completed == 1);
    spool_free(s);
    s = open_w(base, dir, 0, 1);
    int want[2] = {0, 1};
    CHECK(s && peek_is(s, want, 2));
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void free_completes_every_append(void)
{
    enum { N = 200 };
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    static struct waiter w[N];
    memset(w, 0, sizeof w);
    completed = 0;
    for (int i = 0; i < N; i++) {
        CHECK(append_payload(s, i, &w[i]) == 0);
        if (i == N / 2)
            usleep(20000); /* so the first half is likely written when free begins */
    }
    spool_free(s); /* without running the loop */
    int ok = 0, stopping = 0;
    for (int i = 0; i < N; i++) {
        CHECK(w[i].calls == 1);
        if (w[i].ok)
            CHECK(ok++ == i); /* the durable ones are a prefix */
        else
            stopping += strcmp(w[i].err, "stopping") == 0;
    }
    CHECK(ok + stopping == N);
    printf("# %d durable, %d stopping\n", ok, stopping);
    s = open_w(base, dir, 0, 1);
    int want[N];
    range(want, 0, ok);
    CHECK(s && peek_is(s, want, (size_t)ok));
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

static void segments_rotate_past_8_mib(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    size_t len = 3u << 20;
    unsigned char *big = calloc(1, len);
    completed = 0;
    for (int i = 0; i < 4; i++) {
        struct waiter w = {0};
        big[0] = (unsigned char)i;
        CHECK(spool_append(s, big, len, on_done, &w) == 0);
        CHECK(wait_for(base, i + 1) && w.ok);
    }
    CHECK(count_files(dir, "w0-", ".spool", NULL) == 2); /* 3 records, then 1 */
    struct spool_stats st;
    spool_stats(s, &st);
    CHECK(st.files == 2 && st.pending == 4 && st.pending_bytes == 4 * (uint64_t)len);
    struct spool_record r[4];
    size_t n;
    CHECK(spool_peek(s, 4, r, &n) == 0 && n == 4);
    for (size_t i = 0; i < n; i++)
        CHECK(r[i].len == len && ((const unsigned char *)r[i].data)[0] == i);
    spool_free(s);
    free(big);
    event_base_free(base);
    rm_dir(dir);
}

static void one_process_per_worker(void)
{
    const char *dir = new_dir();
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 1, 2);
    char err[256] = "";
    CHECK(s && spool_open(base, dir, 1, 2, err, sizeof err) == NULL);
    CHECK(strstr(err, "in use") != NULL);
    spool_free(s);
    s = open_w(base, dir, 1, 2); /* released by spool_free */
    CHECK(s != NULL);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

/* The child appends without pause and reports each acknowledged record on a
 * pipe until it is killed. */
static void crash_child(const char *dir, int fd)
{
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    static struct waiter w[4000];
    int sent = 0, reported = 0;
    completed = 0;
    while (s && sent < 4000) {
        while (sent < 4000 && sent - completed < 64)
            if (append_payload(s, sent, &w[sent]) == 0)
                sent++;
        wait_for(base, completed + 1);
        for (; reported < completed && w[reported].ok; reported++)
            if (write(fd, &reported, sizeof reported) != sizeof reported)
                _exit(1);
    }
    pause();
    _exit(0);
}

static void acknowledged_records_survive_kill_9(void)
{
    const char *dir = new_dir();
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        crash_child(dir, p[1]);
    }
    close(p[1]);
    int acked = -1, k;
    while (acked < 300 && read(p[0], &k, sizeof k) == sizeof k)
        acked = k;
    kill(pid, SIGKILL); /* mid-burst */
    waitpid(pid, NULL, 0);
    while (read(p[0], &k, sizeof k) == sizeof k)
        acked = k;
    close(p[0]);
    struct event_base *base = event_base_new();
    struct spool *s = open_w(base, dir, 0, 1);
    int found = 0, in_order = 1;
    struct spool_record recs[500];
    size_t n;
    while (s && spool_peek(s, 500, recs, &n) == 0 && n > 0)
        for (size_t i = 0; i < n; i++, found++) {
            unsigned char buf[400];
            size_t len = payload(found, buf);
            in_order &= recs[i].len == len && memcmp(recs[i].data, buf, len) == 0;
            CHECK(spool_done(s, recs[i].id) == 0);
        }
    printf("# %d acknowledged before the kill, %d found\n", acked + 1, found);
    CHECK(in_order && acked >= 300 && found >= acked + 1);
    spool_free(s);
    event_base_free(base);
    rm_dir(dir);
}

/* spool_prepare_dir: missing parents are made (0755), the directory 0700;
 * a path that cannot be a directory is refused with a message naming it. */
static void prepare_dir_makes_parents_and_refuses_files(void)
{
    char err[256], path[256], parent[128];
    struct stat st;
    mode_t mask = umask(0);
    umask(mask);
    const char *dir = new_dir(); /* <tmp>/spool, not there yet */
    snprintf(parent, sizeof parent, "%s", dir);
    *strrchr(parent, '/') = '\0';
    snprintf(path, sizeof path, "%s/a/b/", dir);
    CHECK(spool_prepare_dir(path, err, sizeof err) == 0);
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == (0755 & ~mask));
    snprintf(path, sizeof path, "%s/a/b", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);
    CHECK(spool_prepare_dir(path, err, sizeof err) == 0); /* already there */
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    CHECK(spool_prepare_dir(path, err, sizeof err) != 0);
    CHECK(strstr(err, "/file is not a directory") != NULL);
    snprintf(path, sizeof path, "%s/file/spool", dir);
    CHECK(spool_prepare_dir(path, err, sizeof err) != 0);
    CHECK(strstr(err, "file/spool: Not a directory") != NULL);
    CHECK(spool_prepare_dir("", err, sizeof err) != 0);
    rm_dir(dir);
}

static const struct tap_case cases[] = {
    {"CRC-32C matches the check value", crc32c_check_value},
    {"a burst shares fsyncs and replays in order with exact bytes",
     group_commit_and_replay_in_order},
    {"done records are not replayed; progress persists, done out of order too",
     done_records_are_not_replayed},
    {"the .done file: an offset line, then marks; one line or bad marks still read",
     done_file_format},
    {"peek from an id pages past the records not done", peek_from_pages_on},
    {"finished segments are deleted except the active one", finished_segments_are_deleted},
    {"a torn tail is skipped, counted and never appended after",
     torn_tail_is_never_handed_out},
    {"a corrupt record ends its segment; later segments still replay",
     corrupt_record_ends_its_segment},
    {"appends over 4 MiB are refused; exactly 4 MiB works", too_large_is_refused},
    {"worker 0 adopts the files of workers >= nworkers", orphans_are_adopted_by_worker_0},
    {"failed batches report the errno and are never handed out",
     failed_batches_are_never_handed_out},
    {"a cancelled append calls nobody back but is durable",
     cancelled_appends_stay_silent_but_durable},
    {"spool_free completes every append: durable or stopping", free_completes_every_append},
    {"segments rotate past 8 MiB", segments_rotate_past_8_mib},
    {"a worker's files are used by one spool at a time", one_process_per_worker},
    {"acknowledged records survive kill -9 mid-burst", acknowledged_records_survive_kill_9},
    {"the directory is made with its parents; a file in its place is refused",
     prepare_dir_makes_parents_and_refuses_files},
};

TAP_MAIN(cases)
