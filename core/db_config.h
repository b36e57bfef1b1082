/* db_config.h — the database servers of the configuration, as a pg_cluster.
 *
 * The server named "main" is DATABASE_URL's (it holds the registry). Each
 * URL of STEEPLE_TENANT_DATABASE_URLS is a tenant server named "host:port"
 * (stable while the server keeps its address); without that list tenants
 * live on main. Free of Lua. */
#ifndef STEEPLE_DB_CONFIG_H
#define STEEPLE_DB_CONFIG_H

#include "config.h"

struct event_base;
struct pg_cluster;

/* The cluster for cfg (each server's connection budget is
 * db.server_max_connections, shared by the node's workers: see pg_budget.h),
 * or NULL with a message. A configuration without db.url gives a cluster with
 * no servers. */
struct pg_cluster *db_cluster_new(struct event_base *base, const struct config *cfg, char *err,
                                  size_t errlen) __attribute__((warn_unused_result));

/* Maps the node's shared connection budget for cfg->workers workers and
 * registers every configured server in it. The master calls this before it
 * forks. Returns 0, or -1 with a message. */
int db_budget_init(const struct config *cfg, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The key of the server a URL names ("host:port"), into out. Returns 0, or -1
 * when the URL does not parse. */
int db_server_key(const char *url, char *out, size_t cap);

#endif
