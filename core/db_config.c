/* db_config.c — servers from the configuration (see db_config.h). */
#include "db_config.h"
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

static int add_tenant_servers(struct pg_cluster *cl, const struct config *cfg, int cap,
                              char *err, size_t errlen)
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
        } else if (strcmp(key, main_key) == 0) { /* main is already there */
            rc = pg_cluster_hold_tenants(cl, "main");
        } else {
            rc = pg_cluster_add_server(cl, key, url, cap, err, errlen);
            if (rc == 0)
                rc = pg_cluster_hold_tenants(cl, key);
        }
    }
    free(list);
    return rc;
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
    int workers = cfg->workers > 0 ? cfg->workers : 1;
    int cap = cfg->db.server_max_connections / workers;
    if (cap < 1)
        cap = 1;
    if (pg_cluster_add_server(cl, "main", cfg->db.url, cap, err, errlen) != 0 ||
        (cfg->db.tenant_urls[0] ? add_tenant_servers(cl, cfg, cap, err, errlen)
                                : pg_cluster_hold_tenants(cl, "main")) != 0) {
        pg_cluster_free(cl);
        return NULL;
    }
    return cl;
}
