/* pg_server.c — one database server: how it is known (key, alias, name),
 * its libpq keywords, its metric series and its circuit breaker (see
 * pg_server.h). */
#include "pg_server.h"
#include "clock.h"
#include "log.h"
#include "pg_budget.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const open_names[OPEN_NREASONS] = {"free", "evict", "handover"};
static const char *const close_names[CLOSE_NREASONS] = {"evict", "handover", "shed",
                                                        "idle",  "error",    "retired"};

/* ---- the breaker ------------------------------------------------------ */

int server_breaker_allows(struct pg_server *srv, const struct pg_settings *s, double *retry_after)
{
    if (srv->failures < s->breaker_failures)
        return 1;
    double now = clock_mono();
    if (now < srv->open_until) {
        *retry_after = srv->open_until - now;
        return 0;
    }
    if (srv->probing) { /* half open: one probe at a time */
        *retry_after = 1.0;
        return 0;
    }
    return 1;
}

int server_may_connect(struct pg_server *srv, const struct pg_settings *s)
{
    double ignored;
    return srv->nconnecting < CONNECTING_MAX && server_breaker_allows(srv, s, &ignored);
}

void server_breaker_result(struct pg_server *srv, const struct pg_settings *s, int ok,
                           const char *err)
{
    if (ok) {
        if (srv->failures >= s->breaker_failures)
            log_info("database server %s answers again; breaker closed", srv->name);
        srv->failures = 0;
        srv->probing = 0;
        return;
    }
    srv->failures++;
    srv->probing = 0;
    if (srv->failures >= s->breaker_failures) {
        srv->open_until = clock_mono() + s->breaker_open_s;
        log_warn("database server %s unavailable (%s); failing fast for %.0f s", srv->name, err,
                 s->breaker_open_s);
    }
}

/* ---- servers ---------------------------------------------------------- */

void server_free(struct pg_server *s)
{
    if (s->kw) {
        for (int i = 0; s->kw[i]; i++) {
            free(s->kw[i]);
            if (i != s->dbname_slot)
                free(s->val[i]);
        }
    }
    free(s->kw);
    free(s->val);
    free(s);
}

static char *dup_or_null(const char *v)
{
    return v ? strdup(v) : NULL;
}

/* Copies the URL's non-empty options, leaving slots for dbname, options
 * (statement timeout) and application_name. */
static int parse_server(struct pg_server *s, const char *url, const char *options, char *err,
                        size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        snprintf(err, errlen, "bad database URL for %s: %s", s->name, perr ? perr : "out of memory");
        PQfreemem(perr);
        return -1;
    }
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    s->kw = calloc((size_t)n + 4, sizeof *s->kw);
    s->val = calloc((size_t)n + 4, sizeof *s->val);
    int k = 0, ok = s->kw && s->val;
    for (PQconninfoOption *o = opts; ok && o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0' || strcmp(o->keyword, "options") == 0 ||
            strcmp(o->keyword, "application_name") == 0)
            continue;
        if (strcmp(o->keyword, "dbname") == 0) {
            snprintf(s->dbname, sizeof s->dbname, "%s", o->val);
            continue;
        }
        s->kw[k] = strdup(o->keyword);
        s->val[k] = dup_or_null(o->val);
        ok = s->kw[k] && s->val[k];
        k++;
    }
    PQconninfoFree(opts);
    if (!ok)
        goto oom;
    s->dbname_slot = k;
    s->kw[k] = strdup("dbname");
    s->val[k++] = NULL; /* set per connect */
    s->kw[k] = strdup("options");
    s->val[k++] = strdup(options);
    s->kw[k] = strdup("application_name");
    s->val[k++] = strdup("steeple");
    if (!s->kw[k - 3] || !s->kw[k - 2] || !s->val[k - 2] || !s->kw[k - 1] || !s->val[k - 1])
        goto oom;
    if (s->dbname[0] == '\0')
        snprintf(s->dbname, sizeof s->dbname, "postgres");
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* Resolves the server's metric series once. */
static void server_metrics_init(struct pg_server *s)
{
    char esc[128], labels[METRICS_LABELS_LEN];
    metrics_escape_label(esc, sizeof esc, s->name);
    snprintf(s->m.label, sizeof s->m.label, "server=\"%s\"", esc);
    for (int r = 0; r < OPEN_NREASONS; r++) {
        snprintf(labels, sizeof labels, "%s,reason=\"%s\"", s->m.label, open_names[r]);
        s->m.opened[r] = metrics_series("steeple_db_connects_total", "", labels, METRIC_COUNTER);
    }
    for (int r = 0; r < CLOSE_NREASONS; r++) {
        snprintf(labels, sizeof labels, "%s,reason=\"%s\"", s->m.label, close_names[r]);
        s->m.closed[r] = metrics_series("steeple_db_closes_total", "", labels, METRIC_COUNTER);
    }
    (void)metrics_histogram_init(&s->m.wait, "steeple_db_wait_seconds", s->m.label);
}

struct pg_server *server_new(const char *key, const char *alias, const char *name,
                             const char *url, const char *options, int cap, char *err,
                             size_t errlen)
{
    struct pg_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->alias, sizeof s->alias, "%s", alias ? alias : "");
    snprintf(s->name, sizeof s->name, "%s", name ? name : key);
    TAILQ_INIT(&s->waiting);
    TAILQ_INIT(&s->idle);
    if (parse_server(s, url, options, err, errlen) != 0) {
        server_free(s);
        return NULL;
    }
    if ((s->slot = pg_budget_server(key, cap > 0 ? cap : 1)) < 0) {
        snprintf(err, errlen, "no room for database server '%s' in the connection budget", s->name);
        server_free(s);
        return NULL;
    }
    server_metrics_init(s);
    return s;
}
