/* master.c — process supervision (see master.h).
 *
 * The master runs no event loop (a libevent base shared across fork would
 * share its epoll set with the workers); it waits in poll() on a signalfd and,
 * with --watch, an inotify descriptor. */
#include "master.h"
#include "clock.h"
#include "db_config.h"
#include "host.h"
#include "log.h"
#include "lua_host.h"
#include "lua_libs.h"
#include "metrics.h"
#include "pg_budget.h"
#include "ratelimit.h"
#include "spool.h"
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Present only in sanitizer builds. */
extern void __lsan_do_leak_check(void) __attribute__((weak));

#define BACKOFF_MIN_S 0.1
#define BACKOFF_MAX_S 10.0
#define STABLE_AFTER_S 10.0 /* a worker that lived this long resets its back-off */

struct slot {
    pid_t pid;        /* 0 when not running */
    double started;
    double restart_at; /* when pid == 0: fork again at this time */
    double backoff;
};

struct master {
    const struct config *cfg;
    const char *lua_dir;
    const char *config_path;
    struct slot *slots;
    int sfd;   /* signalfd */
    int ifd;   /* inotify, or -1 */
    int stopping;
    int failed; /* a worker could not start for a reason a restart cannot fix */
    double kill_at;
    double reload_at; /* debounced --watch reload, 0 = none */
};

static void spawn(struct master *m, int i)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork failed: %s", strerror(errno));
        m->slots[i].restart_at = clock_mono() + 1.0;
        return;
    }
    if (pid == 0) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        close(m->sfd);
        if (m->ifd >= 0)
            close(m->ifd);
        int status = worker_main(i, m->cfg, m->lua_dir, m->config_path);
        if (__lsan_do_leak_check)
            __lsan_do_leak_check(); /* sanitizer builds: _exit skips it */
        _exit(status);
    }
    m->slots[i].pid = pid;
    m->slots[i].started = clock_mono();
}

static void signal_workers(struct master *m, int sig)
{
    for (int i = 0; i < m->cfg->workers; i++)
        if (m->slots[i].pid > 0)
            kill(m->slots[i].pid, sig);
}

/* Tells the workers to finish and exit (SIGTERM, or a fatal worker exit). */
static void stop(struct master *m)
{
    if (m->stopping)
        return;
    log_info("stopping");
    m->stopping = 1;
    m->kill_at = clock_mono() + m->cfg->shutdown_timeout_s + 5.0;
    signal_workers(m, SIGTERM);
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < m->cfg->workers; i++) {
            struct slot *s = &m->slots[i];
            if (s->pid != pid)
                continue;
            s->pid = 0;
            if (m->stopping)
                break;
            if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_FATAL) {
                log_error("worker %d (pid %d) cannot start with this configuration (see its "
                          "message above), and starting it again would not help: stopping",
                          i, (int)pid);
                m->failed = 1;
                stop(m);
                break;
            }
            double now = clock_mono();
            if (now - s->started >= STABLE_AFTER_S)
                s->backoff = 0;
            s->backoff = s->backoff == 0 ? BACKOFF_MIN_S : s->backoff * 2;
            if (s->backoff > BACKOFF_MAX_S)
                s->backoff = BACKOFF_MAX_S;
            s->restart_at = now + s->backoff;
            if (WIFSIGNALED(status))
                log_warn("worker %d (pid %d) killed by signal %d; restarting in %.1f s", i,
                         (int)pid, WTERMSIG(status), s->backoff);
            else
                log_warn("worker %d (pid %d) exited with status %d; restarting in %.1f s", i,
                         (int)pid, WEXITSTATUS(status), s->backoff);
        }
    }
}

static int running(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->cfg->workers; i++)
        n += m->slots[i].pid > 0;
    return n;
}

static void on_signal(struct master *m, int sig)
{
    switch (sig) {
    case SIGCHLD:
        reap(m);
        break;
    case SIGHUP:
        log_info("reloading the workers' scripts");
        signal_workers(m, SIGHUP);
        break;
    case SIGTERM:
    case SIGINT:
        stop(m);
        break;
    default:
        break;
    }
}

static void watch_dir(int ifd, const char *dir)
{
    if (inotify_add_watch(ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0)
        log_warn("cannot watch %s: %s", dir, strerror(errno));
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char sub[PATH_MAX];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            watch_dir(ifd, sub);
    }
    closedir(d);
}

static int setup_watch(struct master *m)
{
    m->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (m->ifd < 0)
        return -1;
    watch_dir(m->ifd, m->lua_dir);
    if (m->config_path &&
        inotify_add_watch(m->ifd, m->config_path, IN_CLOSE_WRITE | IN_MOVE_SELF) < 0)
        log_warn("cannot watch %s: %s", m->config_path, strerror(errno));
    return 0;
}

static void drain_watch(struct master *m)
{
    char buf[4096];
    while (read(m->ifd, buf, sizeof buf) > 0)
        ;
    m->reload_at = clock_mono() + 0.1; /* editors write in bursts */
}

/* Milliseconds until the next timed action, at most 1 s. */
static int next_timeout(const struct master *m)
{
    double now = clock_mono(), next = now + 1.0;
    for (int i = 0; i < m->cfg->workers; i++)
        if (!m->stopping && m->slots[i].pid == 0 && m->slots[i].restart_at < next)
            next = m->slots[i].restart_at;
    if (m->reload_at > 0 && m->reload_at < next)
        next = m->reload_at;
    int ms = (int)((next - now) * 1000.0) + 1;
    return ms < 0 ? 0 : ms;
}

static void timed_actions(struct master *m)
{
    double now = clock_mono();
    for (int i = 0; i < m->cfg->workers; i++)
        if (!m->stopping && m->slots[i].pid == 0 && m->slots[i].restart_at <= now)
            spawn(m, i);
    if (m->reload_at > 0 && m->reload_at <= now) {
        m->reload_at = 0;
        log_info("files changed; reloading the workers' scripts");
        signal_workers(m, SIGHUP);
    }
    if (m->stopping && now >= m->kill_at) {
        log_warn("workers did not stop in time; killing them");
        signal_workers(m, SIGKILL);
        m->kill_at = now + 1.0;
    }
}

static int loop(struct master *m)
{
    struct pollfd pfd[2] = {{m->sfd, POLLIN, 0}, {m->ifd, POLLIN, 0}};
    int nfds = m->ifd >= 0 ? 2 : 1;
    while (!m->stopping || running(m) > 0) {
        int n = poll(pfd, (nfds_t)nfds, next_timeout(m));
        if (n < 0 && errno != EINTR) {
            log_error("poll: %s", strerror(errno));
            return 1;
        }
        if (n > 0 && (pfd[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(m->sfd, &si, sizeof si) == (ssize_t)sizeof si)
                on_signal(m, (int)si.ssi_signo);
        }
        if (n > 0 && nfds == 2 && (pfd[1].revents & POLLIN))
            drain_watch(m);
        timed_actions(m);
    }
    return 0;
}

/* Loads the scripts once in the master so that a broken script or config
 * stops start-up with one clear message instead of a crash-looping worker. */
static int check_scripts(const struct config *cfg, const char *lua_dir, const char *config_path)
{
    struct host probe = {0}; /* no services: the scripts only load */
    char err[1024];
    probe.index = -1;
    probe.cfg = *cfg;
    probe.lua_dir = lua_dir;
    probe.config_path = config_path;
    struct script_state *ss = script_state_new(&probe, steeple_newstate(lua_dir), err, sizeof err);
    if (ss == NULL) {
        log_error("cannot load the scripts: %s", err);
        return -1;
    }
    script_state_unref(ss);
    return 0;
}

/* Creates the spool directory (and its parents) before any worker needs it,
 * so that a path no worker could use stops start-up with one message. */
static int check_spool_dir(const struct config *cfg)
{
    char err[512];
    if (spool_prepare_dir(cfg->spool_dir, err, sizeof err) != 0) {
        log_error("spool.dir: %s", err);
        return -1;
    }
    return 0;
}

static int check_listen(const struct config *cfg)
{
    char err[256];
    int fd = worker_listen_socket(cfg->listen, cfg->port, err, sizeof err);
    if (fd < 0) {
        log_error("%s", err);
        return -1;
    }
    close(fd);
    return 0;
}

/* Each worker may hold limits.max_connections sockets, its database pools
 * and a few files of its own: the soft open-file limit is raised to the hard
 * one, and a limit still too low for the cap is reported. */
#define FD_HEADROOM 256

static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = old;
    }
    rlim_t need = (rlim_t)cfg->limits.max_connections + FD_HEADROOM;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_warn("the open-file limit (%llu) is below limits.max_connections + %d (%llu): "
                 "connections past it are refused",
                 (unsigned long long)rl.rlim_cur, FD_HEADROOM, (unsigned long long)need);
}

int master_main(const struct config *cfg, const char *lua_dir, const char *config_path,
                int watch)
{
    struct master m = {.cfg = cfg, .lua_dir = lua_dir, .config_path = config_path, .ifd = -1};
    if (check_scripts(cfg, lua_dir, config_path) != 0 || check_listen(cfg) != 0 ||
        check_spool_dir(cfg) != 0)
        return 1;
    raise_fd_limit(cfg);
    if (metrics_init(cfg->workers) != 0 || ratelimit_init(RATELIMIT_DEFAULT_SLOTS) != 0) {
        log_error("cannot map the shared metrics and rate-limit regions");
        return 1;
    }
    char err[256];
    if (db_budget_init(cfg, err, sizeof err) != 0) {
        log_error("%s", err);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGHUP, SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    m.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    m.slots = calloc((size_t)cfg->workers, sizeof *m.slots);
    if (m.sfd < 0 || m.slots == NULL || (watch && setup_watch(&m) != 0)) {
        log_error("cannot set up the master: %s", strerror(errno));
        return 1;
    }
    log_info("steeple serving on %s:%d with %d workers (pid %d)", cfg->listen, cfg->port,
             cfg->workers, (int)getpid());
    for (int i = 0; i < cfg->workers; i++)
        spawn(&m, i);
    int rc = loop(&m);
    if (m.failed)
        rc = 1;
    log_info(m.failed ? "stopped: a worker could not start" : "stopped");
    free(m.slots);
    close(m.sfd);
    if (m.ifd >= 0)
        close(m.ifd);
    metrics_shutdown();
    ratelimit_shutdown();
    pg_budget_shutdown();
    return rc;
}
