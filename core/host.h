/* host.h — what the Lua bindings of one process may reach: its event base,
 * thread pool, database cluster, spool, outbound HTTP client, settings, its
 * requests and its current scripts.
 *
 * A worker fills one for its life; the master fills one (index -1, no
 * services) to check the scripts before it forks. A script state keeps a
 * pointer to its host (lua_host.h: script_host). */
#ifndef STEEPLE_HOST_H
#define STEEPLE_HOST_H

#include "config.h"

struct event_base;
struct threadpool;
struct pg_cluster;
struct spool;
struct http_client;
struct request_set;
struct script_state;

struct host {
    int index;               /* the worker's index, 0-based; -1: the master */
    const char *lua_dir;
    const char *config_path; /* NULL: defaults and environment only */
    struct config cfg;       /* as read by the current script state */
    struct event_base *base;
    struct threadpool *pool;
    struct pg_cluster *cluster;      /* database servers and pools, or NULL */
    struct spool *spool;             /* the durable webhook spool, or NULL */
    struct http_client *http_client; /* outbound HTTP; made on first use, or NULL */
    struct request_set *requests;    /* live requests and tasks (request.h), or NULL */
    struct script_state *scripts;    /* current: new requests run here, or NULL */
    int stopping;                    /* no new tasks: the worker is shutting down */
};

#endif
