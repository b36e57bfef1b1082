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

/* Statements a connection prepares with db.prepared_statements: more than
 * the distinct statements a database sees on the hot paths. */
#define PREPARED_PER_CONNECTION 128

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
        .prepared_max = cfg->db.prepared_statements ? PREPARED_PER_CONNECTION : 0,
    };
    return s;
}

/* Splits an entry of db.tenant_urls: "name=postgresql://..." gives its name
 * (a lower-case letter, then lower-case letters, digits, _ or -, at most
 * DB_SERVER_NAME_MAX bytes); anything else is a URL without a name (*name
 * is NULL). Returns the URL, or NULL when the name is malformed. */
static char *split_entry(char *entry, const char **name)
{
    char *eq = strchr(entry, '=');
    *name = NULL;
    if (eq == NULL || (strncmp(eq + 1, "postgresql://", 13) != 0 &&
                       strncmp(eq + 1, "postgres://", 11) != 0))
        return entry; /* a URL, or a "key=value ..." string: no name */
    size_t n = (size_t)(eq - entry);
    int ok = n > 0 && n <= DB_SERVER_NAME_MAX && entry[0] >= 'a' && entry[0] <= 'z' &&
             strspn(entry, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
    *eq = '\0';
    *name = entry;
    return ok ? eq + 1 : NULL;
}

/* Called for each server of db.tenant_urls with how it is known; id->key is
 * "main" for an entry on main's server. */
typedef int (*tenant_server_fn)(void *ctx, const struct pg_server_names *id, const char *url,
                                char *err, size_t errlen);

/* Names the n-th entry (from 1) of db.tenant_urls and calls fn for it. A
 * named server is recorded by its name and still found by its address; an
 * unnamed one is recorded by its address, as before names existed. */
static int visit_entry(char *entry, int n, const char *main_key, tenant_server_fn fn, void *ctx,
                       char *err, size_t errlen)
{
    const char *name;
    char *url = split_entry(entry, &name);
    char address[256], neutral[32];
    if (url == NULL) {
        snprintf(err, errlen, "STEEPLE_TENANT_DATABASE_URLS: entry %d: a server name is a-z, "
                 "then a-z, 0-9, _ or -, at most %d characters", n, DB_SERVER_NAME_MAX);
        return -1;
    }
    if (db_server_key(url, address, sizeof address) != 0) {
        snprintf(err, errlen, "STEEPLE_TENANT_DATABASE_URLS: entry %d: the URL does not parse", n);
        return -1;
    }
    if (strcmp(address, main_key) == 0) { /* the registry's server: main */
        if (name && strcmp(name, "main") != 0) {
            snprintf(err, errlen, "STEEPLE_TENANT_DATABASE_URLS: entry %d is DATABASE_URL's server, "
                     "which is named main", n);
            return -1;
        }
        struct pg_server_names main_id = {.key = "main"};
        return fn(ctx, &main_id, url, err, errlen);
    }
    snprintf(neutral, sizeof neutral, "tenant%d", n);
    struct pg_server_names id = {.key = name ? name : address,
                                 .alias = name ? address : NULL,
                                 .name = name ? name : neutral};
    return fn(ctx, &id, url, err, errlen);
}

/* Calls fn for every entry of STEEPLE_TENANT_DATABASE_URLS. Returns 0, or -1
 * with a message (an entry that does not parse, or fn's). */
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
    int rc = 0, n = 0;
    for (char *entry = strtok_r(list, ",", &save); entry && rc == 0;
         entry = strtok_r(NULL, ",", &save)) {
        entry += strspn(entry, " ");
        if (*entry != '\0')
            rc = visit_entry(entry, ++n, main_key, fn, ctx, err, errlen);
    }
    free(list);
    return rc;
}

struct adding {
    struct pg_cluster *cl;
    int cap;
};

static int add_tenant_server(void *ctx, const struct pg_server_names *id, const char *url,
                             char *err, size_t errlen)
{
    struct adding *a = ctx;
    if (strcmp(id->key, "main") != 0 &&
        pg_cluster_add_server(a->cl, id, url, a->cap, err, errlen) != 0)
        return -1; /* main is already there */
    return pg_cluster_hold_tenants(a->cl, id->key);
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
    struct pg_server_names main_id = {.key = "main"};
    if (pg_cluster_add_server(cl, &main_id, cfg->db.url, a.cap, err, errlen) != 0 ||
        (cfg->db.tenant_urls[0] ? each_tenant_server(cfg, add_tenant_server, &a, err, errlen)
                                : pg_cluster_hold_tenants(cl, "main")) != 0) {
        pg_cluster_free(cl);
        return NULL;
    }
    return cl;
}

static int register_server(void *ctx, const struct pg_server_names *id, const char *url,
                           char *err, size_t errlen)
{
    (void)url;
    if (pg_budget_server(id->key, *(const int *)ctx) >= 0)
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
    struct pg_server_names main_id = {.key = "main"};
    if (register_server(&cap, &main_id, cfg->db.url, err, errlen) != 0)
        return -1;
    return cfg->db.tenant_urls[0] ? each_tenant_server(cfg, register_server, &cap, err, errlen) : 0;
}
