/* log.h — JSON-line logging to stderr.
 *
 * Every line is one JSON object written with a single write(2), so lines from
 * several worker processes never interleave. Callers pass already-safe fields:
 * the logger escapes strings but never decides what is secret; bodies,
 * passwords, tokens, emails and message text must not be passed at all. */
#ifndef STEEPLE_LOG_H
#define STEEPLE_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* A JSON object under construction; fixed capacity, truncates (and stays valid
 * JSON) when full. */
struct log_line {
    char buf[4096];
    size_t len;
    int truncated;
};

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "debug"|"info"|"warn"|"error"; returns -1 for anything else. */
int log_level_parse(const char *name);
/* Sets the "worker" field added to every line (-1 = master). */
void log_set_worker(int worker);

/* Starts a line with time, level, worker and msg. */
void log_begin(struct log_line *l, enum log_level level, const char *msg);
void log_str(struct log_line *l, const char *key, const char *value);
void log_strn(struct log_line *l, const char *key, const char *value, size_t n);
void log_int(struct log_line *l, const char *key, long long value);
void log_num(struct log_line *l, const char *key, double value);
/* A duration in seconds written as milliseconds with three decimals. */
void log_millis(struct log_line *l, const char *key, double seconds);
void log_bool(struct log_line *l, const char *key, int value);
/* Closes the object and writes it (if the level is enabled). */
void log_end(struct log_line *l, enum log_level level);

int log_enabled(enum log_level level);

/* With a callback, debug and info lines are gathered in memory and written
 * by log_flush(), which the caller arranges soon after first_pending() is
 * called (and which runs anyway when the buffer fills or a warn/error line
 * comes). NULL writes every line at once again. */
void log_set_buffering(void (*first_pending)(void));
void log_flush(void);

/* One-shot helpers: a message plus an optional request id (NULL to omit). */
void log_msg(enum log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_msg(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, NULL, __VA_ARGS__)

/* Appends `s` JSON-escaped (without quotes) into dst[0..cap), returns bytes
 * written; never writes past cap. Exposed for the tests and metrics. */
size_t json_escape(char *dst, size_t cap, const char *s, size_t n);

#endif
