/* db_config.h — the database servers of the configuration, as a pg_cluster.
 *
 * The server named "main" is DATABASE_URL's (it holds the registry). Each
 * entry of STEEPLE_TENANT_DATABASE_URLS (db.tenant_urls) is a tenant server,
 * "name=postgresql://..." or a URL alone; without that list tenants live on
 * main. An entry on main's host:port is main.
 *
 * Names never show addresses: metrics and logs call a named server by its
 * name and the n-th entry without one "tenant<n>". The registry records the
 * key of a tenant's server: a named server's name (its "host:port" address,
 * what registrations recorded before it had a name, finds it too), or an
 * unnamed server's address, which stays put when the list is reordered as a
 * "tenant<n>" would not. Free of Lua. */
#ifndef STEEPLE_DB_CONFIG_H
#define STEEPLE_DB_CONFIG_H

#include "config.h"

/* The longest server name of "name=URL". */
#define DB_SERVER_NAME_MAX 32

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
