/* config.h — the settings the C core reads from the configuration.
 *
 * The schema, defaults, environment overrides and validation live in Lua
 * (lua/conf.lua); the core runs that loader and copies the keys it needs here
 * (config_load.h). */
#ifndef STEEPLE_CONFIG_H
#define STEEPLE_CONFIG_H

#include <stddef.h>

struct config_limits {
    long body_bytes;
    long header_bytes;
    double read_timeout_s;
    double request_timeout_s;
    int max_connections;
    int max_connections_per_address; /* 0: any */
    int json_max_depth;
};

struct config_db {
    char url[1024];         /* "" when unset */
    char tenant_urls[4096]; /* comma-separated, "" when unset */
    int pool_max;
    int server_max_connections; /* over all workers */
    int min_idle;
    double acquire_timeout_s, connect_timeout_s, statement_timeout_s, idle_timeout_s;
    int breaker_failures;
    double breaker_open_s;
    int prepared_statements; /* 1: prepare statements with parameters per connection */
};

struct config_tenants {
    int capacity;
    double idle_s;
    double cache_ttl_s;
};

struct config_auth {
    int has_jwt_secret, has_data_key; /* the keys themselves stay in Lua */
    unsigned long long argon2_iterations;
    size_t argon2_memory_bytes;
};

struct config {
    char env[16];
    char listen[64];
    int port;
    int workers; /* resolved: never 0 after config_resolve() */
    double shutdown_timeout_s;
    int threads;
    int log_level; /* enum log_level */
    struct config_limits limits;
    struct config_db db;
    struct config_tenants tenants;
    struct config_auth auth;
    char plain_path[128]; /* "" when the benchmark-only plain route is off */
    char spool_dir[512];  /* spool.dir */
};

#endif
