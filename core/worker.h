/* worker.h — one worker process: an event loop, an HTTP server, a Lua state. */
#ifndef STEEPLE_WORKER_H
#define STEEPLE_WORKER_H

#include "config.h"
#include "metrics.h"

#include <sys/time.h>

struct event;
struct event_base;
struct evhttp;
struct evconnlistener;
struct conn_guard;
struct http_conns;
struct threadpool;
struct watchdog;
struct pg_cluster;
struct script_state;
struct request;
struct spool;
struct http_client;
struct timeval;

#define TICK_RUNNING (-1)

struct worker {
    int index;
    const char *lua_dir;
    const char *config_path; /* NULL: defaults and environment only */
    struct config cfg;       /* as read by the current script state */
    struct event_base *base;
    struct evhttp *http;
    struct evconnlistener *listener;
    struct conn_guard *guard;
    struct http_conns *conns; /* client connections, read through a framer */
    struct threadpool *pool;
    struct watchdog *watchdog;
    struct pg_cluster *cluster; /* database servers and pools */
    struct spool *spool;        /* the durable webhook spool, or NULL */
    struct http_client *http_client; /* outbound HTTP; made on first use, or NULL */
    struct script_state *scripts; /* current: new requests run here */
    struct request *running;      /* whose coroutine is executing, or NULL */
    struct request *inflight;     /* every live request, a doubly linked list */
    int ninflight;
    int writing; /* responses handed to evhttp and not yet written */
    int stopping;
    int exit_when_idle; /* command-line tasks: end the loop when nothing runs */
    double stop_deadline;
    struct event *sig_hup, *sig_term, *sig_int, *stop_tick;
    struct event *tick;  /* runs app.tick() once a second */
    int tick_status;     /* TICK_RUNNING while a tick task runs, else its exit code */
    struct metrics_histogram request_seconds;
    const struct timeval *request_timeout_tv; /* a libevent common timeout */
    struct timeval request_timeout_plain;     /* used if that cannot be made */
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

/* Called when a request ends: lets a stopping worker exit once idle. */
void worker_request_ended(struct worker *w);

#endif
