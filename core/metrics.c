/* metrics.c — shared-memory Prometheus metrics (see metrics.h). */
#include "metrics.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { SLOT_EMPTY = 0, SLOT_CLAIMING = 1, SLOT_READY = 2 };

struct series {
    int state;    /* SLOT_*, accessed atomically */
    int kind;     /* enum metric_kind of the family */
    uint32_t seq; /* creation order: keeps histogram buckets in order */
    char family[METRICS_FAMILY_LEN];
    char suffix[16];
    char labels[METRICS_LABELS_LEN];
};

struct family {
    int state; /* SLOT_*, accessed atomically */
    int kind;  /* enum metric_kind */
    char name[METRICS_FAMILY_LEN];
    char help[METRICS_HELP_LEN];
};

struct region {
    uint32_t next_seq;
    int workers;
    struct family families[METRICS_MAX_FAMILIES];
    struct series series[METRICS_MAX_SERIES];
    int64_t values[]; /* workers rows of METRICS_MAX_SERIES */
};

static struct region *region;
static size_t region_size;
static int64_t *row; /* this process's row, NULL in the master */

static const double bucket_bounds[METRICS_BUCKETS] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

int metrics_init(int workers)
{
    region_size = sizeof(struct region) +
                  (size_t)workers * METRICS_MAX_SERIES * sizeof(int64_t);
    void *p = mmap(NULL, region_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    region = p; /* zero-filled by the kernel */
    region->workers = workers;
    return 0;
}

void metrics_shutdown(void)
{
    if (region != NULL)
        munmap(region, region_size);
    region = NULL;
    row = NULL;
}

void metrics_attach_worker(int worker)
{
    if (region == NULL || worker < 0 || worker >= region->workers)
        return;
    row = region->values + (size_t)worker * METRICS_MAX_SERIES;
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        struct series *s = &region->series[i];
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == SLOT_READY &&
            s->kind == METRIC_GAUGE)
            __atomic_store_n(&row[i], 0, __ATOMIC_RELAXED);
    }
}

static uint32_t hash_key(const char *family, const char *suffix, const char *labels)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *parts[3] = {family, suffix, labels}, **p = parts; p < parts + 3; p++) {
        for (const unsigned char *c = (const unsigned char *)*p; *c; c++)
            h = (h ^ *c) * 16777619u;
        h = (h ^ 0xff) * 16777619u;
    }
    return h;
}

static int same_key(const struct series *s, const char *family, const char *suffix,
                    const char *labels)
{
    return strcmp(s->family, family) == 0 && strcmp(s->suffix, suffix) == 0 &&
           strcmp(s->labels, labels) == 0;
}

int metrics_describe(const char *family, enum metric_kind kind, const char *help)
{
    if (strlen(family) >= METRICS_FAMILY_LEN || strlen(help) >= METRICS_HELP_LEN)
        return -1;
    if (region == NULL) /* no metrics in this process (commands, the master's checks) */
        return 0;
    uint32_t start = hash_key(family, "", "") % METRICS_MAX_FAMILIES;
    for (uint32_t probe = 0; probe < METRICS_MAX_FAMILIES; probe++) {
        struct family *f = &region->families[(start + probe) % METRICS_MAX_FAMILIES];
        int state = __atomic_load_n(&f->state, __ATOMIC_ACQUIRE);
        if (state == SLOT_EMPTY) {
            int expected = SLOT_EMPTY;
            if (__atomic_compare_exchange_n(&f->state, &expected, SLOT_CLAIMING, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                f->kind = kind;
                snprintf(f->name, sizeof f->name, "%s", family);
                snprintf(f->help, sizeof f->help, "%s", help);
                __atomic_store_n(&f->state, SLOT_READY, __ATOMIC_RELEASE);
                return 0;
            }
            state = expected;
        }
        while (state == SLOT_CLAIMING) { /* another process is filling it in */
            sched_yield();
            state = __atomic_load_n(&f->state, __ATOMIC_ACQUIRE);
        }
        if (strcmp(f->name, family) == 0)
            return 0;
    }
    return -1;
}

int metrics_series(const char *family, const char *suffix, const char *labels,
                   enum metric_kind kind)
{
    if (region == NULL || strlen(family) >= METRICS_FAMILY_LEN ||
        strlen(suffix) >= sizeof region->series[0].suffix ||
        strlen(labels) >= METRICS_LABELS_LEN)
        return -1;
    uint32_t start = hash_key(family, suffix, labels) % METRICS_MAX_SERIES;
    for (uint32_t probe = 0; probe < METRICS_MAX_SERIES; probe++) {
        int i = (int)((start + probe) % METRICS_MAX_SERIES);
        struct series *s = &region->series[i];
        int state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        if (state == SLOT_EMPTY) {
            int expected = SLOT_EMPTY;
            if (__atomic_compare_exchange_n(&s->state, &expected, SLOT_CLAIMING, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                s->kind = kind;
                snprintf(s->family, sizeof s->family, "%s", family);
                snprintf(s->suffix, sizeof s->suffix, "%s", suffix);
                snprintf(s->labels, sizeof s->labels, "%s", labels);
                s->seq = __atomic_fetch_add(&region->next_seq, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&s->state, SLOT_READY, __ATOMIC_RELEASE);
                return i;
            }
            state = expected;
        }
        while (state == SLOT_CLAIMING) { /* another process is filling it in */
            sched_yield();
            state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
        }
        if (same_key(s, family, suffix, labels))
            return i;
    }
    return -1;
}

void metrics_add(int series, int64_t delta)
{
    if (row != NULL && series >= 0)
        __atomic_store_n(&row[series], row[series] + delta, __ATOMIC_RELAXED);
}

void metrics_set(int series, int64_t value)
{
    if (row != NULL && series >= 0)
        __atomic_store_n(&row[series], value, __ATOMIC_RELAXED);
}

void metrics_count(const char *family, const char *labels, int64_t delta)
{
    metrics_add(metrics_series(family, "", labels, METRIC_COUNTER), delta);
}

void metrics_gauge(const char *family, const char *labels, int64_t value)
{
    metrics_set(metrics_series(family, "", labels, METRIC_GAUGE), value);
}

int metrics_histogram_init(struct metrics_histogram *h, const char *family,
                           const char *labels)
{
    char le[METRICS_LABELS_LEN];
    for (int b = 0; b <= METRICS_BUCKETS; b++) {
        if (b < METRICS_BUCKETS)
            snprintf(le, sizeof le, "%s%sle=\"%g\"", labels, *labels ? "," : "",
                     bucket_bounds[b]);
        else
            snprintf(le, sizeof le, "%s%sle=\"+Inf\"", labels, *labels ? "," : "");
        h->bucket[b] = metrics_series(family, "_bucket", le, METRIC_HISTOGRAM);
    }
    h->sum_us = metrics_series(family, "_sum", labels, METRIC_HISTOGRAM);
    h->count = metrics_series(family, "_count", labels, METRIC_HISTOGRAM);
    return h->count < 0 ? -1 : 0;
}

void metrics_observe(const struct metrics_histogram *h, double seconds)
{
    for (int b = 0; b < METRICS_BUCKETS; b++)
        if (seconds <= bucket_bounds[b])
            metrics_add(h->bucket[b], 1);
    metrics_add(h->bucket[METRICS_BUCKETS], 1);
    metrics_add(h->sum_us, (int64_t)(seconds * 1e6));
    metrics_add(h->count, 1);
}

void metrics_escape_label(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            dst[o++] = '\\';
            dst[o++] = *s;
        } else if (*s == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *s;
        }
    }
    dst[o] = '\0';
}

static int by_family_then_seq(const void *a, const void *b)
{
    const struct series *x = &region->series[*(const int *)a];
    const struct series *y = &region->series[*(const int *)b];
    int c = strcmp(x->family, y->family);
    if (c != 0)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(region->families[*(const int *)a].name, region->families[*(const int *)b].name);
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case METRIC_COUNTER: return "counter";
    case METRIC_GAUGE: return "gauge";
    case METRIC_HISTOGRAM: return "histogram";
    default: abort();
    }
}

static int is_ready(const int *state)
{
    return __atomic_load_n(state, __ATOMIC_ACQUIRE) == SLOT_READY;
}

/* "# HELP family text", the text escaped as the format asks. */
static void write_help(FILE *out, const struct family *f)
{
    fprintf(out, "# HELP %s ", f->name);
    for (const char *c = f->help; *c; c++) {
        if (*c == '\\')
            fputs("\\\\", out);
        else if (*c == '\n')
            fputs("\\n", out);
        else
            fputc(*c, out);
    }
    fputc('\n', out);
}

/* One sample line: the series summed over every worker's row. */
static void write_sample(FILE *out, int i)
{
    const struct series *s = &region->series[i];
    int64_t total = 0;
    for (int w = 0; w < region->workers; w++)
        total += __atomic_load_n(&region->values[(size_t)w * METRICS_MAX_SERIES + i],
                                 __ATOMIC_RELAXED);
    fprintf(out, "%s%s", s->family, s->suffix);
    if (s->labels[0])
        fprintf(out, "{%s}", s->labels);
    if (strcmp(s->suffix, "_sum") == 0)
        fprintf(out, " %.6f\n", (double)total / 1e6);
    else
        fprintf(out, " %lld\n", (long long)total);
}

/* Writes every family in name order: HELP (when declared), TYPE, then its
 * series. A declared family without series still gets HELP and TYPE. */
static void write_families(FILE *out, const int *idx, int n, const int *fam, int nf)
{
    int k = 0, j = 0;
    while (k < n || j < nf) {
        const struct series *s = k < n ? &region->series[idx[k]] : NULL;
        const struct family *f = j < nf ? &region->families[fam[j]] : NULL;
        int c = s == NULL ? 1 : f == NULL ? -1 : strcmp(s->family, f->name);
        const char *name = c <= 0 ? s->family : f->name;
        int kind = c >= 0 ? f->kind : s->kind; /* the declared type wins */
        if (c >= 0) {
            write_help(out, f);
            j++;
        }
        fprintf(out, "# TYPE %s %s\n", name, kind_name(kind));
        for (; k < n && strcmp(region->series[idx[k]].family, name) == 0; k++)
            write_sample(out, idx[k]);
    }
}

char *metrics_render(size_t *len)
{
    if (region == NULL)
        return NULL;
    int idx[METRICS_MAX_SERIES], fam[METRICS_MAX_FAMILIES], n = 0, nf = 0;
    for (int i = 0; i < METRICS_MAX_SERIES; i++)
        if (is_ready(&region->series[i].state))
            idx[n++] = i;
    for (int i = 0; i < METRICS_MAX_FAMILIES; i++)
        if (is_ready(&region->families[i].state))
            fam[nf++] = i;
    qsort(idx, (size_t)n, sizeof idx[0], by_family_then_seq);
    qsort(fam, (size_t)nf, sizeof fam[0], by_name);
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    if (out == NULL)
        return NULL;
    write_families(out, idx, n, fam, nf);
    if (fclose(out) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}
