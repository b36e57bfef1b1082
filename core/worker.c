/* worker.c — one worker process (see worker.h). */
#include "worker.h"
#include "conn_guard.h"
#include "clock.h"
#include "log.h"
#include "lua_host.h"
#include "lua_libs.h"
#include "http_conn.h"
#include "http_reply.h"
#include "request.h"
#include "task.h"
#include "threadpool.h"
#include "watchdog.h"
#include "db_config.h"
#include "pg_budget.h"
#include "pg_pool.h"
#include "spool.h"
#include "http_client.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* How often the watchdog looks, and how long past a deadline a handler may
 * still hold the loop (a C call, a coroutine of the script's own) before the
 * worker is ended and restarted. */
#define WATCHDOG_PERIOD_S 0.1
#define WATCHDOG_KILL_AFTER_S 5.0

/* How long app.stop() (giving back what the worker holds for the cluster)
 * may take once the worker is told to stop. */
#define STOP_HOOK_S 1.0

/* Jobs that may wait for a pool thread, per thread. */
#define POOL_QUEUE_PER_THREAD 16

/* Creates a non-blocking listening socket on listen:port with SO_REUSEPORT,
 * so every worker accepts on the same port, and TCP_NODELAY, which accepted
 * connections inherit (Linux): a response's last small write must not wait
 * for the client's delayed ACK. Returns the fd or -1. */
int worker_listen_socket(const char *listen_addr, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char service[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(listen_addr, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen address %s: %s", listen_addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", listen_addr, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Info lines (the access log) are written in batches, at most
 * LOG_FLUSH_MS after the first one, instead of one write per request. */
#define LOG_FLUSH_MS 20
static struct event *log_flush_ev;

static void on_log_flush(evutil_socket_t fd, short what, void *arg)
{
    log_flush();
}

static void schedule_log_flush(void)
{
    struct timeval tv = {0, LOG_FLUSH_MS * 1000};
    if (!evtimer_pending(log_flush_ev, NULL))
        evtimer_add(log_flush_ev, &tv);
}

static struct bufferevent *new_connection(struct event_base *base, void *arg)
{
    struct worker *w = arg;
    conn_guard_accepted(w->requests.guard);
    return http_conns_bufferevent(w->requests.conns);
}

static void apply_limits(struct worker *w, const struct config_limits *lim)
{
    if (w->http == NULL) /* a command-line worker */
        return;
    /* the framer (http_framer.h) reads bodies and enforces both limits with
     * JSON answers; evhttp only ever sees header blocks within them, so any
     * body reaching evhttp is a bug it refuses */
    http_conns_set_limits(w->requests.conns, lim->header_bytes, lim->body_bytes);
    evhttp_set_max_body_size(w->http, 0);
    evhttp_set_max_headers_size(w->http, lim->header_bytes);
    evhttp_set_timeout(w->http, (int)(lim->read_timeout_s + 0.999));
    double t = lim->request_timeout_s;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (time_t)t) * 1e6)};
    const struct timeval *common = event_base_init_common_timeout(w->host.base, &tv);
    w->requests.timeout_tv = common ? common : &w->request_timeout_plain;
    w->request_timeout_plain = tv;
    if (w->requests.guard)
        conn_guard_set_limits(w->requests.guard, lim->max_connections,
                              lim->max_connections_per_address, lim->read_timeout_s);
}

/* Warns about settings that changed in the file but only apply on restart. */
static void warn_restart_needed(const struct config *old, const struct config *new)
{
    if (strcmp(old->listen, new->listen) != 0 || old->port != new->port)
        log_warn("listen address changed; restart to apply");
    if (old->workers != new->workers || old->threads != new->threads)
        log_warn("workers or threads changed; restart to apply");
    if (strcmp(old->env, new->env) != 0 || strcmp(old->plain_path, new->plain_path) != 0)
        log_warn("env or bench.plain_path changed; restart to apply");
}

int worker_reload(struct worker *w)
{
    char err[1024];
    struct script_state *ss =
        script_state_new(&w->host, steeple_newstate(w->host.lua_dir), err, sizeof err);
    if (ss == NULL) {
        struct log_line l;
        log_begin(&l, LOG_ERROR, "script reload failed; keeping the running scripts");
        log_str(&l, "error", err);
        log_end(&l, LOG_ERROR);
        metrics_count("steeple_script_reloads_total", "result=\"error\"", 1);
        return -1;
    }
    struct script_state *old = w->host.scripts;
    if (old)
        warn_restart_needed(&old->cfg, &ss->cfg);
    w->host.scripts = ss;
    w->host.cfg.limits = ss->cfg.limits;
    w->host.cfg.shutdown_timeout_s = ss->cfg.shutdown_timeout_s;
    w->host.cfg.log_level = ss->cfg.log_level;
    log_set_level((enum log_level)ss->cfg.log_level);
    apply_limits(w, &w->host.cfg.limits);
    if (old) {
        script_state_unref(old); /* closed when its last request ends */
        metrics_count("steeple_script_reloads_total", "result=\"ok\"", 1);
        log_info("scripts reloaded (generation %u)", ss->generation);
    }
    return 0;
}

/* The request set's idle callback: a request ended or a response was
 * written. A stopping worker ends once nothing runs. */
static void on_request_ended(void *arg)
{
    struct worker *w = arg;
    if ((w->host.stopping || w->exit_when_idle) && request_set_idle(&w->requests))
        event_base_loopexit(w->host.base, NULL);
}

static void on_stop_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (clock_mono() >= w->stop_deadline) {
        log_warn("shutdown timeout: ending %d requests still in flight", w->requests.nlive);
        request_abort_all(&w->requests);
        event_base_loopexit(w->host.base, NULL);
    }
}

static void begin_stop(struct worker *w)
{
    if (w->host.stopping)
        return;
    w->host.stopping = 1;
    conn_guard_stop_accepting(w->requests.guard);
    w->stop_deadline = clock_mono() + w->host.cfg.shutdown_timeout_s;
    log_info("stopping: %d requests in flight", w->requests.nlive);
    if (task_stop(&w->requests, STOP_HOOK_S) < 0)
        log_warn("could not start app.stop: out of memory");
    if (request_set_idle(&w->requests)) {
        event_base_loopexit(w->host.base, NULL);
        return;
    }
    struct timeval tv = {0, 100000};
    event_add(w->stop_tick, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct worker *w = arg;
    if (sig == SIGHUP)
        worker_reload(w);
    else
        begin_stop(w);
}

/* Once a second: app.tick() as a task on the current scripts (housekeeping
 * such as the janitor), unless the previous one is still running. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct worker *w = arg;
    if (w->host.stopping || w->tick_status == TICK_RUNNING)
        return;
    int last = w->tick_status;
    w->tick_status = TICK_RUNNING;
    int rc = task_tick(&w->requests, &w->tick_status);
    if (rc > 0) /* the scripts have no tick */
        w->tick_status = last;
    else if (rc < 0)
        w->tick_status = 1;
}

static int setup_tick(struct worker *w)
{
    struct timeval second = {1, 0};
    w->tick = event_new(w->host.base, -1, EV_PERSIST, on_tick, w);
    return w->tick && event_add(w->tick, &second) == 0 ? 0 : -1;
}

static int setup_http(struct worker *w, int fd)
{
    w->http = evhttp_new(w->host.base);
    w->requests.conns = http_conns_new(w->host.base, w->host.cfg.limits.header_bytes,
                                       w->host.cfg.limits.body_bytes, script_body_limit, &w->host);
    if (w->http == NULL || w->requests.conns == NULL)
        return -1;
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(w->http, request_handle, &w->requests);
    evhttp_set_bevcb(w->http, new_connection, w);
    apply_limits(w, &w->host.cfg.limits);
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(w->http, fd);
    if (bound == NULL)
        return -1;
    w->listener = evhttp_bound_socket_get_listener(bound);
    w->requests.guard = conn_guard_new(
        w->host.base, w->listener, w->host.cfg.port, w->host.cfg.limits.max_connections,
        w->host.cfg.limits.max_connections_per_address, w->host.cfg.limits.read_timeout_s);
    return w->requests.guard ? 0 : -1;
}

static int setup_signals(struct worker *w)
{
    w->sig_hup = evsignal_new(w->host.base, SIGHUP, on_signal, w);
    w->sig_term = evsignal_new(w->host.base, SIGTERM, on_signal, w);
    w->sig_int = evsignal_new(w->host.base, SIGINT, on_signal, w);
    w->stop_tick = event_new(w->host.base, -1, EV_PERSIST, on_stop_tick, w);
    log_flush_ev = evtimer_new(w->host.base, on_log_flush, NULL);
    if (!w->sig_hup || !w->sig_term || !w->sig_int || !w->stop_tick || !log_flush_ev)
        return -1;
    log_set_buffering(schedule_log_flush);
    signal(SIGPIPE, SIG_IGN);
    return event_add(w->sig_hup, NULL) || event_add(w->sig_term, NULL) ||
                   event_add(w->sig_int, NULL)
               ? -1
               : 0;
}

static void teardown(struct worker *w)
{
    request_abort_all(&w->requests);
    http_client_free(w->host.http_client);
    w->host.http_client = NULL;
    if (w->http)
        evhttp_free(w->http); /* closes the connections and the listener */
    http_conns_free(w->requests.conns); /* after evhttp_free: what its connections left */
    threadpool_free(w->host.pool);
    spool_free(w->host.spool); /* appends still queued complete with "stopping" */
    w->host.spool = NULL;
    watchdog_stop(w->requests.watchdog);
    conn_guard_free(w->requests.guard);
    if (w->host.scripts)
        script_state_unref(w->host.scripts);
    pg_cluster_free(w->host.cluster); /* after the scripts: their connections come back first */
    if (w->stop_tick)
        event_del(w->stop_tick);
    if (w->tick)
        event_del(w->tick);
    event_base_loop(w->host.base, EVLOOP_NONBLOCK); /* lets libevent release what it freed late */
    log_set_buffering(NULL); /* flushes */
    struct event *evs[] = {w->sig_hup, w->sig_term, w->sig_int, w->stop_tick, w->tick,
                           log_flush_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i])
            event_free(evs[i]);
    event_base_free(w->host.base);
}

/* Declares the families the core counts for HTTP and reloads (the database
 * ones: pg_cluster_declare_metrics; the scripts declare their own), so that
 * the first scrape shows them. */
static void declare_metrics(struct worker *w)
{
    if (metrics_describe("steeple_http_requests_total", METRIC_COUNTER,
                         "HTTP requests answered, by route pattern and status.") != 0 ||
        metrics_describe("steeple_http_request_duration_seconds", METRIC_HISTOGRAM,
                         "Time from a request's arrival to its answer.") != 0 ||
        metrics_describe("steeple_script_reloads_total", METRIC_COUNTER,
                         "Script reloads (SIGHUP), by result.") != 0 ||
        metrics_histogram_init(&w->requests.seconds, "steeple_http_request_duration_seconds", "") !=
            0)
        log_warn("metrics table full: some HTTP metrics are not recorded");
    metrics_count("steeple_script_reloads_total", "result=\"ok\"", 0);
    metrics_count("steeple_script_reloads_total", "result=\"error\"", 0);
}

/* The parts of a worker made from its configuration. Returns 0, or
 * WORKER_EXIT_FATAL when the configuration is at fault (err says how), or
 * WORKER_EXIT_FAILED (a spool another process still holds, out of memory). */
static int configure(struct worker *w, char *err, size_t errlen)
{
    const struct config *cfg = &w->host.cfg;
    if ((w->host.cluster = db_cluster_new(w->host.base, cfg, err, errlen)) == NULL)
        return WORKER_EXIT_FAILED;
    if (spool_prepare_dir(cfg->spool_dir, err, errlen) != 0)
        return WORKER_EXIT_FATAL;
    w->host.spool =
        spool_open(w->host.base, cfg->spool_dir, w->host.index, cfg->workers, err, errlen);
    if (w->host.spool == NULL)
        return WORKER_EXIT_FAILED;
    if (worker_reload(w) != 0) { /* logged with the file and line */
        snprintf(err, errlen, "the scripts or the config file do not load");
        return WORKER_EXIT_FATAL;
    }
    return setup_tick(w) != 0 ? WORKER_EXIT_FAILED : 0;
}

static void init(struct worker *w, int index, const struct config *cfg, const char *lua_dir,
                 const char *config_path)
{
    w->host.index = index;
    w->host.cfg = *cfg;
    w->host.lua_dir = lua_dir;
    w->host.config_path = config_path;
    request_set_init(&w->requests, &w->host);
    w->requests.on_idle = on_request_ended;
    w->requests.idle_arg = w;
    w->host.requests = &w->requests;
}

int worker_main(int index, const struct config *cfg, const char *lua_dir,
                const char *config_path)
{
    struct worker w = {0};
    char err[256] = "";
    init(&w, index, cfg, lua_dir, config_path);
    log_set_worker(index);
    http_request_ids_init();
    metrics_attach_worker(index);
    pg_budget_attach(index); /* what a predecessor held died with it */
    declare_metrics(&w);

    int fd = worker_listen_socket(cfg->listen, cfg->port, err, sizeof err);
    w.host.base = fd >= 0 ? event_base_new() : NULL;
    if (w.host.base == NULL || setup_signals(&w) != 0 || setup_http(&w, fd) != 0 ||
        (w.host.pool = threadpool_new(w.host.base, cfg->threads,
                                      cfg->threads * POOL_QUEUE_PER_THREAD)) == NULL ||
        (w.requests.watchdog =
             watchdog_start(WATCHDOG_PERIOD_S, WATCHDOG_KILL_AFTER_S, request_overrun)) == NULL) {
        log_error("worker %d could not start: %s", index, err[0] ? err : "out of memory");
        if (w.host.base)
            teardown(&w);
        return WORKER_EXIT_FAILED;
    }
    int status = configure(&w, err, sizeof err);
    if (status != 0) {
        log_error("worker %d could not start: %s", index, err[0] ? err : "out of memory");
        teardown(&w);
        return status;
    }
    pg_cluster_declare_metrics(w.host.cluster);
    log_info("worker %d serving on %s:%d", index, cfg->listen, cfg->port);
    event_base_dispatch(w.host.base);
    teardown(&w);
    log_info("worker %d stopped", index);
    return 0;
}

static void on_interrupt(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    log_warn("interrupted");
    request_abort_all(&w->requests);
    event_base_loopexit(w->host.base, NULL);
}

int worker_run_command(const struct config *cfg, const char *lua_dir, const char *config_path,
                       const char *module, int argc, char **argv)
{
    struct worker w = {0};
    struct config one = *cfg;
    char err[256] = "";
    int code = 1;
    one.workers = 1; /* the command gets the whole connection budget */
    init(&w, 0, &one, lua_dir, config_path);
    w.exit_when_idle = 1;
    w.host.base = event_base_new();
    struct event *sigint = w.host.base ? evsignal_new(w.host.base, SIGINT, on_interrupt, &w) : NULL;
    if (sigint == NULL || event_add(sigint, NULL) != 0 ||
        (w.host.pool = threadpool_new(w.host.base, one.threads,
                                      one.threads * POOL_QUEUE_PER_THREAD)) == NULL ||
        (w.requests.watchdog =
             watchdog_start(WATCHDOG_PERIOD_S, WATCHDOG_KILL_AFTER_S, request_overrun)) == NULL ||
        (w.host.cluster = db_cluster_new(w.host.base, &one, err, sizeof err)) == NULL ||
        worker_reload(&w) != 0) {
        log_error("cannot run %s: %s", module, err[0] ? err : "see above");
        goto done;
    }
    if (strcmp(module, "cli.spool") == 0) {
        /* every worker's files, as worker 0 of one; NULL while a server owns them */
        w.host.spool = spool_open(w.host.base, one.spool_dir, 0, 1, err, sizeof err);
        if (w.host.spool == NULL)
            log_warn("spool: %s", err);
    }
    if (task_command(&w.requests, module, argc, argv, &code) != 0)
        goto done;
    event_base_dispatch(w.host.base);
done:
    if (sigint)
        event_free(sigint);
    if (w.host.base)
        teardown(&w);
    return code;
}
