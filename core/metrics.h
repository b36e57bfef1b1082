/* metrics.h — Prometheus metrics shared by all worker processes.
 *
 * The master creates one shared anonymous mapping before forking. It holds a
 * table of series (family, suffix, labels, kind), claimed by any process with a
 * compare-and-swap, and one row of values per worker: each worker writes only
 * its own row, /metrics sums the rows. A restarted worker zeroes the gauges of
 * its row (its counters carry on, so totals never go backwards). */
#ifndef STEEPLE_METRICS_H
#define STEEPLE_METRICS_H

#include <stddef.h>
#include <stdint.h>

enum metric_kind { METRIC_COUNTER = 1, METRIC_GAUGE, METRIC_HISTOGRAM };

#define METRICS_MAX_SERIES 2048
#define METRICS_MAX_FAMILIES 128
#define METRICS_FAMILY_LEN 64
#define METRICS_HELP_LEN 160
#define METRICS_LABELS_LEN 192
#define METRICS_BUCKETS 12

/* Creates the shared region for `workers` rows. Returns 0, or -1 on failure. */
int metrics_init(int workers) __attribute__((warn_unused_result));
/* Selects the row this process writes; zeroes that row's gauges. */
void metrics_attach_worker(int worker);
/* Unmaps the region (tests, shutdown). */
void metrics_shutdown(void);

/* Declares a family: render() writes its HELP and TYPE lines from then on,
 * before it has any sample. Declaring it again changes nothing (the first
 * declaration wins). Returns 0 (also where metrics_init() has not run), or
 * -1 when the family table is full or the name or help text is too long. */
int metrics_describe(const char *family, enum metric_kind kind, const char *help);

/* Finds or creates a series (a new one reads 0; finding one never changes
 * it); labels is the Prometheus label text without braces ("" for none),
 * already escaped. Returns an index >= 0, or -1 when the
 * table is full or the names are too long (the update is then dropped). */
int metrics_series(const char *family, const char *suffix, const char *labels,
                   enum metric_kind kind);

void metrics_add(int series, int64_t delta);
void metrics_set(int series, int64_t value);

/* A histogram over seconds with fixed buckets, resolved once and reused. */
struct metrics_histogram {
    int bucket[METRICS_BUCKETS + 1]; /* the last one is +Inf */
    int sum_us;
    int count;
};
int metrics_histogram_init(struct metrics_histogram *h, const char *family,
                           const char *labels);
void metrics_observe(const struct metrics_histogram *h, double seconds);

/* Convenience: counter family{labels} += delta, resolved on each call. */
void metrics_count(const char *family, const char *labels, int64_t delta);
/* Gauge family{labels} = value in this worker's row. */
void metrics_gauge(const char *family, const char *labels, int64_t value);

/* Writes `s` escaped for a label value into dst (cap bytes, NUL-terminated). */
void metrics_escape_label(char *dst, size_t cap, const char *s);

/* Renders the exposition text into a malloc'd buffer (caller frees) and sets
 * *len; returns NULL on allocation failure. Families come in name order, each
 * with its HELP (when declared) and TYPE lines, then its series in creation
 * order. */
char *metrics_render(size_t *len) __attribute__((warn_unused_result));

#endif
