/* db_config.c — servers from the configuration (see db_config.h). */
#include "db_config.h"
#include "pg_budget.h"
#include "pg_pool.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int db_server_key(const char *url, char *out, size_t cap)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL) {
        PQfreemem(perr);
        return -1;
    }
    const char *host = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val && *o->val)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0 && o->val && *o->val && host == NULL)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0 && o->val && *o->val)
            port = o->val;
    }
    snprintf(out, cap, "%s:%s", host ? host : "localhost", port ? port : "5432");
    PQconninfoFree(opts);
    return 0;
}

static struct pg_settings settings_of(const struct config *cfg)
{
    struct pg_settings s = {
        .pool_max = cfg->db.pool_max,
        .min_idle = cfg->db.min_idle,
        .acquire_timeout_s = cfg->db.acquire_timeout_s,
        .connect_timeout_s = cfg->db.connect_timeout_s,
        .statement_timeout_s = cfg->db.statement_timeout_s,
        .idle_timeout_s = cfg->db.idle_timeout_s,
        .breaker_failures = cfg->db.breaker_failures,
        .breaker_open_s = cfg->db.breaker_open_s,
        .capacity = cfg->tenants.capacity,
        .pool_idle_s = cfg->tenants.idle_s,
    };
    return s;
}

/* Calls fn(ctx, key, url) for every URL of STEEPLE_TENANT_DATABASE_URLS, with
 * the key "main" for one that names main's server. Returns 0, or -1 with a
 * message (a URL that does not parse, or fn's). */
typedef int (*tenant_server_fn)(void *ctx, const char *key, const char *url, char *err,
                                size_t errlen);

static int each_tenant_server(const struct config *cfg, tenant_server_fn fn, void *ctx, char *err,
                              size_t errlen)
{
    char main_key[256] = "";
    if (db_server_key(cfg->db.url, main_key, sizeof main_key) != 0) {
        snprintf(err, errlen, "DATABASE_URL does not parse");
        return -1;
    }
    char *list = strdup(cfg->db.tenant_urls), *save = NULL;
    if (list == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *url = strtok_r(list, ",", &save); url && rc == 0; url = strtok_r(NULL, ",", &save)) {
        while (*url == ' ')
            url++;
        char key[256];
        if (*url == '\0')
            continue;
        if (db_server_key(url, key, sizeof key) != 0) {
            snprintf(err, errlen, "STEEPLE_TENANT_DATABASE_URLS: a URL does not parse");
            rc = -1;
        } else {
            rc = fn(ctx, strcmp(key, main_key) == 0 ? "main" : key, url, err, errlen);
        }
    }
    free(list);
    return rc;
}

struct adding {
    struct pg_cluster *cl;
    int cap;
};

static int add_tenant_server(void *ctx, const char *key, const char *url, char *err, size_t errlen)
{
    struct adding *a = ctx;
    if (strcmp(key, "main") != 0 && pg_cluster_add_server(a->cl, key, url, a->cap, err, errlen) != 0)
        return -1; /* main is already there */
    return pg_cluster_hold_tenants(a->cl, key);
}

struct pg_cluster *db_cluster_new(struct event_base *base, const struct config *cfg, char *err,
                                  size_t errlen)
{
    struct pg_settings s = settings_of(cfg);
    struct pg_cluster *cl = pg_cluster_new(base, &s);
    if (cl == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->db.url[0] == '\0')
        return cl;
    struct adding a = {cl, cfg->db.server_max_connections};
    if (pg_cluster_add_server(cl, "main", cfg->db.url, a.cap, err, errlen) != 0 ||
        (cfg->db.tenant_urls[0] ? each_tenant_server(cfg, add_tenant_server, &a, err, errlen)
                                : pg_cluster_hold_tenants(cl, "main")) != 0) {
        pg_cluster_free(cl);
        return NULL;
    }
    return cl;
}

static int register_server(void *ctx, const char *key, const char *url, char *err, size_t errlen)
{
    (void)url;
    if (pg_budget_server(key, *(const int *)ctx) >= 0)
        return 0;
    snprintf(err, errlen, "too many database servers for the connection budget (at most %d)",
             PG_BUDGET_MAX_SERVERS);
    return -1;
}

int db_budget_init(const struct config *cfg, char *err, size_t errlen)
{
    if (pg_budget_init(cfg->workers) != 0) {
        snprintf(err, errlen, "cannot map the shared connection budget");
        return -1;
    }
    int cap = cfg->db.server_max_connections;
    if (cfg->db.url[0] == '\0')
        return 0;
    if (register_server(&cap, "main", cfg->db.url, err, errlen) != 0)
        return -1;
    return cfg->db.tenant_urls[0] ? each_tenant_server(cfg, register_server, &cap, err, errlen) : 0;
}
