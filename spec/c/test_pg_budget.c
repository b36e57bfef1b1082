/* test_pg_budget.c — the shared connection budget (across processes too) and
 * the pool policy's rules. */
#include "pg_budget.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define T0 1000.0 /* an arbitrary monotonic time */

/* Waits for pid; returns its exit status, or -1 when it did not exit. */
static int exit_status(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static void reserves_up_to_the_cap(void)
{
    CHECK(pg_budget_init(1) == 0);
    int s = pg_budget_server("main", 3);
    CHECK(s == 0);
    CHECK(pg_budget_cap(s) == 3);
    for (int i = 0; i < 3; i++)
        CHECK(pg_budget_reserve(s) == 1);
    CHECK(pg_budget_reserve(s) == 0);
    CHECK(pg_budget_used(s) == 3);
    CHECK(pg_budget_held(s) == 3);
    pg_budget_release(s);
    CHECK(pg_budget_used(s) == 2);
    CHECK(pg_budget_reserve(s) == 1);
    CHECK(pg_budget_reserve(s) == 0);
    for (int i = 0; i < 5; i++) /* more releases than holds change nothing */
        pg_budget_release(s);
    CHECK(pg_budget_used(s) == 0);
    CHECK(pg_budget_held(s) == 0);
    CHECK(pg_budget_reserve(-1) == 0);
    CHECK(pg_budget_reserve(7) == 0); /* not registered */
    pg_budget_shutdown();
}

static void registers_each_server_once(void)
{
    CHECK(pg_budget_init(2) == 0);
    CHECK(pg_budget_server("main", 10) == 0);
    CHECK(pg_budget_server("db2:5432", 20) == 1);
    CHECK(pg_budget_server("main", 99) == 0); /* keeps its first cap */
    CHECK(pg_budget_cap(0) == 10);
    CHECK(pg_budget_server("main", 0) == -1);
    char key[PG_BUDGET_KEY_LEN + 1];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    CHECK(pg_budget_server(key, 5) == -1);
    for (int i = 2; i < PG_BUDGET_MAX_SERVERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "server%d", i);
        CHECK(pg_budget_server(name, 1) == i);
    }
    CHECK(pg_budget_server("one too many", 1) == -1);
    CHECK(pg_budget_init(0) == -1);
    CHECK(pg_budget_init(PG_BUDGET_MAX_WORKERS + 1) == -1);
    pg_budget_shutdown();
}

static void a_private_table_without_init(void)
{
    pg_budget_shutdown();
    int s = pg_budget_server("main", 2);
    CHECK(s == 0);
    CHECK(pg_budget_reserve(s) == 1);
    CHECK(pg_budget_reserve(s) == 1);
    CHECK(pg_budget_reserve(s) == 0);
    pg_budget_shutdown();
}

static void a_restarted_worker_returns_what_it_held(void)
{
    CHECK(pg_budget_init(2) == 0);
    int s = pg_budget_server("main", 10);
    pg_budget_attach(1);
    for (int i = 0; i < 4; i++)
        CHECK(pg_budget_reserve(s) == 1);
    pg_budget_attach(0);
    CHECK(pg_budget_reserve(s) == 1);
    CHECK(pg_budget_used(s) == 5);
    pg_budget_attach(1); /* worker 1 again: its 4 died with it */
    CHECK(pg_budget_used(s) == 1);
    CHECK(pg_budget_held(s) == 0);
    pg_budget_attach(PG_BUDGET_MAX_WORKERS); /* out of range: ignored */
    CHECK(pg_budget_used(s) == 1);
    pg_budget_shutdown();
}

/* Four processes race for 50 units, taking and giving back: together they
 * never hold more than the cap, and every unit is accounted for. */
static void the_cap_holds_across_processes(void)
{
    enum { WORKERS = 4, CAP = 50, ROUNDS = 2000 };
    CHECK(pg_budget_init(WORKERS) == 0);
    int s = pg_budget_server("main", CAP);
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            pg_budget_attach(w);
            int held = 0, bad = 0;
            for (int i = 0; i < ROUNDS; i++) {
                if ((i % 3 != 2) && pg_budget_reserve(s))
                    held++;
                else if (held > 0) {
                    pg_budget_release(s);
                    held--;
                }
                bad |= pg_budget_used(s) > CAP;
            }
            while (pg_budget_reserve(s)) /* then take what is left */
                held++;
            _exit(bad ? 255 : held);
        }
    }
    int total = 0;
    for (int w = 0; w < WORKERS; w++) {
        int held = exit_status(pids[w]);
        CHECK(held >= 0 && held != 255);
        total += held;
    }
    CHECK(total == CAP);
    CHECK(pg_budget_used(s) == CAP);
    pg_budget_shutdown();
}

static void others_see_published_demand(void)
{
    CHECK(pg_budget_init(3) == 0);
    int s = pg_budget_server("main", 10);
    pg_budget_attach(1);
    struct pg_budget_demand d1 = {4, 2, T0 + 1};
    pg_budget_publish(s, &d1);
    pg_budget_attach(2);
    struct pg_budget_demand d2 = {3, 1, T0 + 3};
    pg_budget_publish(s, &d2);
    pg_budget_attach(0);
    struct pg_budget_demand d0 = {9, 9, T0};
    pg_budget_publish(s, &d0); /* its own: not among the others */
    struct pg_budget_others o;
    pg_budget_others(s, T0 + 2, &o);
    CHECK(o.busy == 7);
    CHECK(o.starving == 3);
    CHECK(o.older == 2); /* worker 1's arrived before T0 + 2 */
    CHECK(o.oldest > T0 + 0.999 && o.oldest < T0 + 1.001);
    pg_budget_others(s, T0, &o);
    CHECK(o.older == 0);
    pg_budget_attach(1); /* a restart clears the row */
    pg_budget_attach(0);
    pg_budget_others(s, T0 + 2, &o);
    CHECK(o.busy == 3);
    CHECK(o.starving == 1);
    CHECK(o.older == 0);
    pg_budget_shutdown();
}

static void fair_share(void)
{
    CHECK(pg_policy_fair_share(40, 0) == 40);
    CHECK(pg_policy_fair_share(40, 20) == 2);
    CHECK(pg_policy_fair_share(40, 40) == 1);
    CHECK(pg_policy_fair_share(40, 41) == 0); /* they rotate */
    CHECK(pg_policy_fair_share(80, 42) == 1);
}

static void grows_only_for_waiters_nothing_serves_in_time(void)
{
    static const struct {
        int nwait, idle, connecting, active;
        double hold, cost;
        int grow;
    } cases[] = {
        {1, 1, 0, 0, 0.001, 0.02, 0},  /* an idle connection is about to be handed over */
        {3, 0, 0, 1, 0.001, 0.02, 0},  /* a busy one serves 20 before a connect ends */
        {25, 0, 0, 1, 0.001, 0.02, 1}, /* but not 25 */
        {40, 0, 0, 2, 0.001, 0.02, 0},
        {2, 0, 0, 1, 0.3, 0.02, 1},    /* long statements: the second waiter gets its own */
        {2, 0, 1, 0, 0, 0.02, 1},      /* nothing known: one waiter per connect */
        {1, 0, 1, 0, 0, 0.02, 0},
        {10, 0, 1, 0, 0.002, 0.02, 0}, /* the connecting one serves 11 */
        {12, 0, 1, 0, 0.002, 0.02, 1},
        {0, 0, 0, 1, 0.3, 0.02, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = pg_policy_should_grow(cases[i].nwait, cases[i].idle, cases[i].connecting,
                                        cases[i].active, cases[i].hold, cases[i].cost);
        if (got != cases[i].grow)
            printf("# grow case %zu: got %d\n", i, got);
        CHECK(got == cases[i].grow);
    }
}

static void lingers_only_for_pools_used_often(void)
{
    CHECK(pg_policy_linger(0, 0.02) == 0);     /* no gap measured yet */
    CHECK(pg_policy_linger(0.01, 0.02) == 0.04); /* used every 10 ms: two connects' time */
    CHECK(pg_policy_linger(0.04, 0.02) == 0.04);
    CHECK(pg_policy_linger(0.5, 0.02) == 0);   /* its next use is not coming soon */
}

static void evicts_only_what_a_pool_can_spare(void)
{
    static const struct {
        double used_ago;
        int conns, fair;
        double idle_ago, linger;
        int evict;
    } cases[] = {
        {5, 1, 1, 5, 0, 1},        /* its pool is not busy */
        {0.1, 1, 1, 0.1, 0, 0},    /* a busy pool keeps its only one */
        {0.1, 2, 1, 0.1, 0, 1},    /* beyond its fair share */
        {0.1, 2, 2, 0.1, 0, 0},
        {0.1, 1, 0, 0.1, 0, 1},    /* they rotate: an idle one moves on */
        {0.01, 1, 0, 0.01, 0.04, 0}, /* ... after its linger */
        {0.05, 1, 0, 0.05, 0.04, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pg_victim v = {T0 - cases[i].used_ago, cases[i].conns, T0 - cases[i].idle_ago,
                              cases[i].linger};
        int got = pg_policy_may_evict(&v, cases[i].fair, T0);
        if (got != cases[i].evict)
            printf("# evict case %zu: got %d\n", i, got);
        CHECK(got == cases[i].evict);
    }
}

static void gives_up_a_connection_to_a_starving_pool(void)
{
    static const struct {
        int conns, waiters;
        double oldest_ago, linger;
        int fair, give;
    } cases[] = {
        {1, 0, 0.1, 0, 1, 0},    /* its fair share: kept */
        {2, 3, 0.1, 0, 1, 1},    /* beyond it: given up, even with waiters */
        {2, 3, 0.1, 0, 2, 0},
        {1, 0, 0.01, 0, 0, 1},   /* they rotate: its queue is served, it moves on */
        {1, 0, 0.01, 0.04, 0, 0}, /* ... unless its pool is used often: it lingers */
        {1, 2, 0.1, 0, 0, 0},    /* not before its queue is served */
        {1, 2, 0.6, 0, 0, 1},    /* unless the starving waiter waited preempt_s */
        {2, 2, 0.1, 0, 0, 1},    /* rotating, a pool keeps one */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pg_return r = {cases[i].conns, cases[i].waiters, T0 - cases[i].oldest_ago,
                              cases[i].linger};
        int got = pg_policy_give_up(&r, cases[i].fair, 0.5, T0);
        if (got != cases[i].give)
            printf("# give-up case %zu: got %d\n", i, got);
        CHECK(got == cases[i].give);
    }
}

static const struct tap_case cases[] = {
    {"reserves up to the cap and takes back only what it gave", reserves_up_to_the_cap},
    {"registers each server once, up to the table's size", registers_each_server_once},
    {"makes a private table for a process without init", a_private_table_without_init},
    {"a restarted worker returns what its predecessor held", a_restarted_worker_returns_what_it_held},
    {"the cap holds over racing processes", the_cap_holds_across_processes},
    {"other workers' published demand is summed", others_see_published_demand},
    {"fair share: cap over busy pools, 0 when they outnumber it", fair_share},
    {"grows only for waiters no connection serves in time", grows_only_for_waiters_nothing_serves_in_time},
    {"a pool's idle connection lingers only when it is used often", lingers_only_for_pools_used_often},
    {"evicts only what a pool can spare", evicts_only_what_a_pool_can_spare},
    {"gives up a connection to a starving pool by the rules", gives_up_a_connection_to_a_starving_pool},
};

TAP_MAIN(cases)
