/* main.c — the steeple command line. */
#include "config_load.h"
#include "crypto.h"
#include "devkeys.h"
#include "log.h"
#include "lua_libs.h"
#include "master.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef STEEPLE_VERSION
#define STEEPLE_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fputs("usage: steeple serve [--config FILE] [--scripts DIR] [--watch]\n"
          "       steeple migrate registry|tenants [--concurrency N]\n"
          "       steeple doctor\n"
          "       steeple tenants list | suspend ID | activate ID | drop ID --yes\n"
          "       steeple spool status | replay\n"
          "       steeple config      check and print the settings\n"
          "       steeple version\n"
          "every command takes --config FILE and --scripts DIR\n",
          out);
}

struct options {
    const char *config_path;
    const char *lua_dir;
    int watch;
    int nargs; /* arguments left for a Lua command */
    char *args[32];
};

static int parse(int argc, char **argv, struct options *o)
{
    o->config_path = access("config.lua", R_OK) == 0 ? "config.lua" : NULL;
    o->lua_dir = "lua";
    o->watch = 0;
    o->nargs = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            o->config_path = argv[++i];
        else if (strcmp(argv[i], "--scripts") == 0 && i + 1 < argc)
            o->lua_dir = argv[++i];
        else if (strcmp(argv[i], "--watch") == 0)
            o->watch = 1;
        else if (o->nargs < 32)
            o->args[o->nargs++] = argv[i];
        else {
            fprintf(stderr, "steeple: too many arguments\n");
            return -1;
        }
    }
    if (o->config_path && access(o->config_path, R_OK) != 0) {
        fprintf(stderr, "steeple: cannot read config file '%s'\n", o->config_path);
        return -1;
    }
    return 0;
}

static int load(const struct options *o, struct config *cfg)
{
    char err[1024];
    if (config_load(steeple_newstate(o->lua_dir), o->config_path, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "steeple: %s\n", err);
        return -1;
    }
    config_resolve(cfg);
    log_set_level((enum log_level)cfg->log_level);
    return 0;
}

/* Every command needs the keys in the environment before its workers read
 * the configuration: development makes missing ones once into var/;
 * production refuses to serve without them. */
static int ensure_keys(const struct options *o, struct config *cfg, int serving)
{
    if (cfg->auth.has_jwt_secret && cfg->auth.has_data_key)
        return 0;
    if (strcmp(cfg->env, "development") != 0) {
        if (!serving)
            return 0; /* commands other than serve do not use them */
        fprintf(stderr, "steeple: %s%s%s not set; env %s needs both keys (see README)\n",
                cfg->auth.has_jwt_secret ? "" : "STEEPLE_JWT_SECRET",
                !cfg->auth.has_jwt_secret && !cfg->auth.has_data_key ? " and " : "",
                cfg->auth.has_data_key ? "" : "STEEPLE_DATA_KEY", cfg->env);
        return -1;
    }
    char err[512];
    if (devkeys_export(DEVKEYS_PATH, err, sizeof err) != 0) {
        fprintf(stderr, "steeple: %s\n", err);
        return -1;
    }
    return load(o, cfg);
}

static void print_config(const struct config *c)
{
    printf("env %s\nlisten %s\nport %d\nworkers %d\nthreads %d\nshutdown_timeout_s %g\n"
           "limits.body_bytes %ld\nlimits.header_bytes %ld\nlimits.read_timeout_s %g\n"
           "limits.request_timeout_s %g\nlimits.max_connections %d\nlimits.json_max_depth %d\n",
           c->env, c->listen, c->port, c->workers, c->threads, c->shutdown_timeout_s,
           c->limits.body_bytes, c->limits.header_bytes, c->limits.read_timeout_s,
           c->limits.request_timeout_s, c->limits.max_connections, c->limits.json_max_depth);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("steeple %s\n", STEEPLE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0) {
        usage(stdout);
        return 0;
    }
    struct options o;
    struct config cfg;
    static const char *const lua_commands[][2] = {
        {"migrate", "cli.migrate"}, {"doctor", "cli.doctor"}, {"tenants", "cli.tenants"},
        {"spool", "cli.spool"},
    };
    const char *module = NULL;
    for (size_t i = 0; i < sizeof lua_commands / sizeof lua_commands[0]; i++)
        if (strcmp(cmd, lua_commands[i][0]) == 0)
            module = lua_commands[i][1];
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "config") != 0 && module == NULL) {
        fprintf(stderr, "steeple: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if (parse(argc, argv, &o) != 0 || load(&o, &cfg) != 0)
        return 1;
    if (crypto_init() != 0) {
        fprintf(stderr, "steeple: libsodium failed to initialise\n");
        return 1;
    }
    if (strcmp(cmd, "config") != 0 && ensure_keys(&o, &cfg, module == NULL) != 0)
        return 1;
    if (strcmp(cmd, "config") == 0) {
        print_config(&cfg);
        return 0;
    }
    if (module != NULL)
        return worker_run_command(&cfg, o.lua_dir, o.config_path, module, o.nargs, o.args);
    if (o.nargs > 0) {
        fprintf(stderr, "steeple: unknown option '%s'\n", o.args[0]);
        return 2;
    }
    return master_main(&cfg, o.lua_dir, o.config_path, o.watch);
}
