/* log.c — JSON-line logging to stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

static enum log_level current_level = LOG_INFO;
static int current_worker = -1;

/* Buffered lines (debug and info) when a worker enabled buffering. */
static char pending[32768];
static size_t npending;
static int buffering;
static void (*on_first_pending)(void);

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level) { current_level = level; }
enum log_level log_get_level(void) { return current_level; }
void log_set_worker(int worker) { current_worker = worker; }
int log_enabled(enum log_level level) { return level >= current_level; }

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

/* Bytes that need escaping in a JSON string: quote, backslash, controls. */
static int needs_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\' || c == 0x7f;
}

size_t json_escape(char *dst, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && !needs_escape((unsigned char)s[run]))
            run++;
        size_t len = run - i;
        if (len > cap - o)
            len = cap - o;
        memcpy(dst + o, s + i, len);
        o += len;
        if (i + len < run || run == n)
            return o; /* full, or done */
        i = run;
        unsigned char c = (unsigned char)s[i++];
        char esc = c == '"' ? '"' : c == '\\' ? '\\' : c == '\n' ? 'n' : c == '\r' ? 'r'
                 : c == '\t' ? 't' : 0;
        if (esc) {
            if (o + 2 > cap)
                return o;
            dst[o++] = '\\';
            dst[o++] = esc;
        } else {
            if (o + 6 > cap)
                return o;
            memcpy(dst + o, "\\u00", 4);
            dst[o + 4] = hex[c >> 4];
            dst[o + 5] = hex[c & 15];
            o += 6;
        }
    }
    return o;
}

/* Room kept free for the closing "}\n" and a truncation marker. */
#define LOG_RESERVE 32

static void put(struct log_line *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - LOG_RESERVE - l->len;
    if (n > room) {
        n = room;
        l->truncated = 1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_escaped(struct log_line *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - LOG_RESERVE - l->len;
    size_t w = json_escape(l->buf + l->len, room, s, n);
    if (w == room && n > 0)
        l->truncated = 1;
    l->len += w;
}

static void put_key(struct log_line *l, const char *key)
{
    put(l, ",\"", 2);
    put_escaped(l, key, strlen(key));
    put(l, "\":", 2);
}

/* Writes the decimal digits of v into buf (at least 24 bytes); returns the
 * length. Cheaper than printf on the per-request path. */
static size_t format_int(char *buf, long long v)
{
    char tmp[24];
    size_t n = 0, o = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[o++] = '-';
    while (n)
        buf[o++] = tmp[--n];
    return o;
}

/* The "YYYY-MM-DDTHH:MM:SS." part of the timestamp, remade once a second. */
static const char *second_prefix(time_t sec)
{
    static time_t cached = (time_t)-1;
    static char text[64];
    if (sec != cached) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached = sec;
    }
    return text;
}

void log_begin(struct log_line *l, enum log_level level, const char *msg)
{
    struct timespec ts;
    l->len = 0;
    l->truncated = 0;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *prefix = second_prefix(ts.tv_sec);
    long ms = ts.tv_nsec / 1000000;
    char millis[4] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 0};
    put(l, "{\"ts\":\"", 7);
    put(l, prefix, strlen(prefix));
    put(l, millis, 3);
    put(l, "Z\",\"level\":\"", 12);
    put(l, level_names[level], strlen(level_names[level]));
    put(l, "\"", 1);
    if (current_worker >= 0)
        log_int(l, "worker", current_worker);
    log_str(l, "msg", msg);
}

void log_strn(struct log_line *l, const char *key, const char *value, size_t n)
{
    put_key(l, key);
    put(l, "\"", 1);
    put_escaped(l, value, n);
    put(l, "\"", 1);
}

void log_str(struct log_line *l, const char *key, const char *value)
{
    if (value == NULL)
        return;
    log_strn(l, key, value, strlen(value));
}

void log_int(struct log_line *l, const char *key, long long value)
{
    char num[32];
    size_t n = format_int(num, value);
    put_key(l, key);
    put(l, num, n);
}

void log_millis(struct log_line *l, const char *key, double seconds)
{
    long long us = (long long)(seconds * 1e6 + 0.5);
    char num[40];
    size_t n = format_int(num, us / 1000);
    num[n++] = '.';
    num[n++] = (char)('0' + us % 1000 / 100);
    num[n++] = (char)('0' + us % 100 / 10);
    num[n++] = (char)('0' + us % 10);
    put_key(l, key);
    put(l, num, n);
}

void log_num(struct log_line *l, const char *key, double value)
{
    char num[48];
    int n = snprintf(num, sizeof num, "%.6g", value);
    put_key(l, key);
    put(l, num, (size_t)n);
}

void log_bool(struct log_line *l, const char *key, int value)
{
    put_key(l, key);
    put(l, value ? "true" : "false", value ? 4 : 5);
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere left to report a failing stderr */
        p += w;
        n -= (size_t)w;
    }
}

void log_flush(void)
{
    if (npending > 0)
        write_all(pending, npending);
    npending = 0;
}

void log_set_buffering(void (*first_pending)(void))
{
    log_flush();
    buffering = first_pending != NULL;
    on_first_pending = first_pending;
}

void log_end(struct log_line *l, enum log_level level)
{
    if (!log_enabled(level))
        return;
    if (l->truncated) {
        static const char mark[] = ",\"truncated\":true";
        memcpy(l->buf + l->len, mark, sizeof mark - 1);
        l->len += sizeof mark - 1;
    }
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    if (!buffering || level >= LOG_WARN) {
        log_flush(); /* keep the order of lines */
        write_all(l->buf, l->len);
        return;
    }
    if (npending + l->len > sizeof pending)
        log_flush();
    if (npending == 0 && on_first_pending)
        on_first_pending();
    memcpy(pending + npending, l->buf, l->len);
    npending += l->len;
}

void log_msg(enum log_level level, const char *request_id, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct log_line l;
    log_begin(&l, level, msg);
    log_str(&l, "requestId", request_id);
    log_end(&l, level);
}
