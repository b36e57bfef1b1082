/* worker.h — one worker process: an event loop, an HTTP server, its requests
 * on the current scripts. */
#ifndef STEEPLE_WORKER_H
#define STEEPLE_WORKER_H

#include "config.h"
#include "host.h"
#include "request.h"

#include <sys/time.h>

struct event;
struct evhttp;
struct evconnlistener;

#define TICK_RUNNING (-1)

struct worker {
    struct host host;             /* what the Lua bindings reach */
    struct request_set requests;  /* host.requests; owns none of what it points to */
    struct evhttp *http;
    struct evconnlistener *listener;
    int exit_when_idle; /* command-line tasks: end the loop when nothing runs */
    double stop_deadline;
    struct event *sig_hup, *sig_term, *sig_int, *stop_tick;
    struct event *tick;  /* runs app.tick() once a second */
    int tick_status;     /* TICK_RUNNING while a tick task runs, else its exit code */
    struct timeval request_timeout_plain; /* used if no common timeout can be made */
};

/* Creates a non-blocking SO_REUSEPORT listening socket; returns the fd, or
 * -1 with a message in err. */
int worker_listen_socket(const char *listen_addr, int port, char *err, size_t errlen);

/* A worker's exit statuses besides 0: it could not start (the master starts
 * it again, with back-off), or it cannot start because of its configuration
 * (a spool directory it cannot create or write, scripts or a config file
 * that do not load, such as a bad key), which starting again would not
 * change: the master then stops the server. */
#define WORKER_EXIT_FAILED 2
#define WORKER_EXIT_FATAL 3

/* Runs worker `index` until it is told to stop; returns the exit status. */
int worker_main(int index, const struct config *cfg, const char *lua_dir,
                const char *config_path);

/* Runs the Lua command `module`.main(args) as a task on a worker of its own
 * (databases, thread pool, no HTTP) and returns its exit status. */
int worker_run_command(const struct config *cfg, const char *lua_dir, const char *config_path,
                       const char *module, int argc, char **argv);

/* Builds a new script state and makes it current; on failure keeps the old
 * one, logs the error and counts it. Returns 0 on success, -1 on failure. */
int worker_reload(struct worker *w);

#endif
