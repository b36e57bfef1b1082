/* test_pg_op.c — one database operation (pg_op.h) against a real PostgreSQL:
 * wait, acquire, send, retry once, cancel, and a pinned connection handed
 * over by a statement still running. DATABASE_URL names the server
 * (spec/run.sh starts one for the c suite); without it the cases are
 * skipped. */
#include "clock.h"
#include "pg_conn.h"
#include "pg_op.h"
#include "pg_pool.h"
#include "tap.h"

#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_S 120.0 /* a generous bound on any wait below: never a timing check */

static struct event_base *base;
static struct pg_cluster *cl;

/* What the done callback saw. */
struct outcome {
    int calls;
    int unavailable;
    ExecStatusType status;
    char sqlstate[6];
    char value[64]; /* the first row's first column */
    char err[256];
    struct pg_conn *conn; /* acquire_only */
};

static void on_done(struct pg_op *op, void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->unavailable = op->unavailable;
    snprintf(o->err, sizeof o->err, "%s", op->err);
    if (op->res) {
        o->status = PQresultStatus(op->res);
        if (o->status == PGRES_FATAL_ERROR) {
            const char *state = PQresultErrorField(op->res, PG_DIAG_SQLSTATE);
            snprintf(o->err, sizeof o->err, "%s", PQresultErrorMessage(op->res));
            snprintf(o->sqlstate, sizeof o->sqlstate, "%s", state ? state : "");
        }
        if (PQntuples(op->res) > 0 && PQnfields(op->res) > 0)
            snprintf(o->value, sizeof o->value, "%s", PQgetvalue(op->res, 0, 0));
    }
    o->conn = op->conn;
    op->conn = NULL;
}

/* Runs the loop until *flag is set or WAIT_S has passed; returns *flag. */
static int run_until(const int *flag)
{
    double end = clock_mono() + WAIT_S;
    while (!*flag && clock_mono() < end)
        event_base_loop(base, EVLOOP_ONCE); /* the cluster's tick wakes it */
    return *flag;
}

/* Runs the loop until the pool has an idle connection to give, which it
 * takes (NULL after WAIT_S). */
static struct pg_conn *idle_conn(struct pg_pool *p)
{
    double end = clock_mono() + WAIT_S;
    struct pg_conn *c;
    while ((c = pg_pool_try_acquire(p)) == NULL && clock_mono() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return c;
}

/* A fresh cluster whose pools hold at most pool_max connections, each
 * preparing at most prepared_max statements. */
static int setup_prepared(int pool_max, int prepared_max)
{
    const char *url = getenv("DATABASE_URL");
    struct pg_settings s = {
        .pool_max = pool_max, .min_idle = 0, .acquire_timeout_s = WAIT_S,
        .connect_timeout_s = 10, .statement_timeout_s = WAIT_S, .idle_timeout_s = 60,
        .breaker_failures = 5, .breaker_open_s = 1, .capacity = 8, .pool_idle_s = 60,
        .prepared_max = prepared_max,
    };
    char err[256];
    struct pg_server_names id = {"main", NULL, NULL};
    base = event_base_new();
    cl = base ? pg_cluster_new(base, &s) : NULL;
    if (cl == NULL || pg_cluster_add_server(cl, &id, url, 10, err, sizeof err) != 0) {
        printf("# setup: %s\n", cl ? err : "out of memory");
        return -1;
    }
    return 0;
}

/* A fresh cluster whose connections prepare nothing. */
static int setup(int pool_max)
{
    return setup_prepared(pool_max, 0);
}

static void teardown(void)
{
    pg_cluster_free(cl);
    event_base_free(base);
    cl = NULL;
    base = NULL;
}

static struct pg_pool *main_pool(void)
{
    char err[160];
    return pg_cluster_pool(cl, "main", pg_cluster_server_dbname(cl, "main"), err, sizeof err);
}

/* An operation running sql without parameters on pool p. */
static struct pg_op *query_op(struct pg_pool *p, const char *sql, struct outcome *o)
{
    char *text;
    struct pg_op *op = pg_op_new_statement(sql, strlen(sql), 0, 0, &text);
    if (op == NULL)
        return NULL;
    op->pool = p;
    op->timeout = pg_op_timeout(pg_cluster_settings(cl));
    op->deadline = INFINITY;
    op->done = on_done;
    op->arg = o;
    return op;
}

/* Takes a connection of p (whose pools start empty) through an acquire-only
 * operation that waits for its connect; o->conn is the connection, or NULL. */
static void hold(struct pg_pool *p, struct outcome *o)
{
    struct pg_op *op = query_op(p, "", o);
    op->acquire_only = 1;
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(run_until(&o->calls) && o->conn != NULL);
}

static void runs_a_statement_with_parameters(void)
{
    if (setup(2) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome o = {0};
    const char *sql = "SELECT $1::int + $2::int";
    char *text;
    struct pg_op *op = pg_op_new_statement(sql, strlen(sql), 2, 5, &text);
    CHECK(op != NULL && strcmp(op->sql, sql) == 0);
    if (op == NULL) {
        teardown();
        return;
    }
    memcpy(text, "40\0" "2", 5);
    op->values[0] = text;
    op->values[1] = text + 3;
    op->lengths[0] = 2;
    op->lengths[1] = 1;
    op->pool = p;
    op->timeout = pg_op_timeout(pg_cluster_settings(cl));
    op->deadline = INFINITY;
    op->done = on_done;
    op->arg = &o;
    CHECK(pg_op_start(op) == PG_OP_PENDING); /* no connection yet: it waits */
    CHECK(run_until(&o.calls));
    CHECK(o.calls == 1);
    CHECK(!o.unavailable);
    CHECK(o.status == PGRES_TUPLES_OK);
    CHECK(strcmp(o.value, "42") == 0);
    struct pg_conn *c = idle_conn(p); /* the connection came back */
    CHECK(c != NULL);
    if (c)
        pg_pool_release(c, 1);
    teardown();
}

static void an_sql_error_is_a_result(void)
{
    if (setup(2) != 0) {
        CHECK(0);
        return;
    }
    struct outcome o = {0};
    struct pg_op *op = query_op(main_pool(), "SELECT * FROM no_such_table", &o);
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(run_until(&o.calls));
    CHECK(!o.unavailable);
    CHECK(o.status == PGRES_FATAL_ERROR);
    teardown();
}

static void takes_an_idle_connection_at_once(void)
{
    if (setup(2) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome o = {0};
    struct pg_op *op = query_op(p, "SELECT 1", &o);
    op->acquire_only = 1;
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(run_until(&o.calls));
    CHECK(o.conn != NULL);
    int pid = o.conn ? pg_conn_backend_pid(o.conn) : 0;
    if (o.conn)
        pg_pool_release(o.conn, 1);
    struct outcome o2 = {0};
    op = query_op(p, "SELECT pg_backend_pid()", &o2);
    op->acquire_only = 1;
    CHECK(pg_op_start(op) == PG_OP_DONE); /* the idle one, without waiting */
    CHECK(op->conn != NULL && pg_conn_backend_pid(op->conn) == pid);
    CHECK(o2.calls == 0);
    if (op->conn)
        pg_pool_release(op->conn, 1);
    pg_op_free(op);
    teardown();
}

/* A full pool: the statement waits for the connection held, and runs on it
 * when it comes back. */
static void waits_for_a_connection_given_back(void)
{
    if (setup(1) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome held = {0};
    hold(p, &held);
    struct outcome o = {0};
    struct pg_op *op = query_op(p, "SELECT pg_backend_pid()", &o);
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    for (int i = 0; i < 20; i++) /* the loop turns; the statement still waits */
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    CHECK(o.calls == 0);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", held.conn ? pg_conn_backend_pid(held.conn) : -1);
    if (held.conn)
        pg_pool_release(held.conn, 1);
    CHECK(run_until(&o.calls));
    CHECK(o.status == PGRES_TUPLES_OK);
    CHECK(strcmp(o.value, pid) == 0);
    teardown();
}

static int builds;

/* Fails the first `fail_builds` times, then writes "SELECT 7". */
static int fail_builds;
static int flaky_build(struct pg_op *op, PGconn *pg)
{
    (void)pg;
    if (builds++ < fail_builds)
        return -1;
    snprintf(op->sql, 16, "SELECT 7");
    return 0;
}

/* A send that fails costs the connection (closed) and is tried once more on
 * another; a second failure ends the operation. */
static void sends_once_more_then_gives_up(void)
{
    if (setup(2) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome o = {0};
    struct pg_op *op = query_op(p, "xxxxxxxxxxxxxxx", &o);
    op->build = flaky_build;
    builds = 0;
    fail_builds = 1;
    CHECK(pg_op_wait(op) == PG_OP_PENDING);
    CHECK(run_until(&o.calls));
    CHECK(builds == 2);
    CHECK(!o.unavailable && strcmp(o.value, "7") == 0);

    struct outcome o2 = {0};
    op = query_op(p, "xxxxxxxxxxxxxxx", &o2);
    op->build = flaky_build;
    builds = 0;
    fail_builds = 100;
    CHECK(pg_op_wait(op) == PG_OP_PENDING);
    CHECK(run_until(&o2.calls));
    CHECK(builds == 2);
    CHECK(o2.unavailable);
    CHECK(strcmp(o2.err, "cannot send the query") == 0);
    teardown();
}

/* A wait ends by the operation's deadline, with a retry-after. */
static void a_wait_ends_at_the_deadline(void)
{
    if (setup(1) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome held = {0};
    hold(p, &held);
    struct outcome o = {0};
    struct pg_op *op = query_op(p, "SELECT 1", &o);
    op->deadline = clock_mono(); /* already over */
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(run_until(&o.calls));
    CHECK(o.unavailable);
    CHECK(strstr(o.err, "timed out") != NULL);
    if (held.conn)
        pg_pool_release(held.conn, 1);
    teardown();
}

/* Cancelled while waiting: no callback, and the pool serves the next one. */
static void cancels_a_wait(void)
{
    if (setup(1) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome held = {0};
    hold(p, &held);
    struct outcome o = {0};
    struct pg_op *op = query_op(p, "SELECT 1", &o);
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    pg_op_cancel(op);
    if (held.conn)
        pg_pool_release(held.conn, 1);
    struct pg_conn *c = idle_conn(p);
    CHECK(c != NULL);
    CHECK(o.calls == 0);
    if (c)
        pg_pool_release(c, 1);
    teardown();
}

/* Cancelled while the statement runs: no callback; the connection comes
 * back when the statement ends. */
static void cancels_a_running_statement(void)
{
    if (setup(1) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome warm = {0}; /* connects first, so the statement goes out at once */
    struct pg_op *op = query_op(p, "SELECT 1", &warm);
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(run_until(&warm.calls));
    struct outcome o = {0};
    op = query_op(p, "SELECT pg_sleep(0.2)", &o);
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(op->waiter == NULL); /* sent on the idle connection */
    pg_op_cancel(op);
    struct pg_conn *c = idle_conn(p);
    CHECK(c != NULL);
    CHECK(o.calls == 0);
    if (c)
        pg_pool_release(c, 1);
    teardown();
}

/* A pinned connection let go while its statement runs goes back (closed) at
 * the statement's end; let go while idle, it goes back at once. */
static void a_pin_hands_over_at_the_end(void)
{
    if (setup(1) != 0) {
        CHECK(0);
        return;
    }
    struct pg_pool *p = main_pool();
    struct outcome held = {0};
    hold(p, &held);
    struct pg_pin *pin = pg_pin_new(held.conn);
    CHECK(pin != NULL);
    if (pin == NULL) {
        teardown();
        return;
    }
    struct outcome o = {0};
    struct pg_op *op = query_op(NULL, "SELECT 5", &o);
    op->pin = pin;
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(pin->busy);
    CHECK(run_until(&o.calls));
    CHECK(strcmp(o.value, "5") == 0);
    CHECK(!pin->busy);

    struct outcome o2 = {0};
    op = query_op(NULL, "SELECT pg_sleep(0.1)", &o2);
    op->pin = pin;
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    pg_pin_release(pin); /* busy: its statement's end gives it back */
    CHECK(run_until(&o2.calls));
    CHECK(o2.status == PGRES_TUPLES_OK);
    struct outcome again = {0}; /* it was closed: a new one connects */
    hold(p, &again);
    if (again.conn) {
        pin = pg_pin_new(again.conn);
        CHECK(pin != NULL);
        if (pin)
            pg_pin_release(pin); /* idle: back at once */
        else
            pg_pool_release(again.conn, 1);
        struct pg_conn *c = pg_pool_try_acquire(p);
        CHECK(c == again.conn);
        if (c)
            pg_pool_release(c, 1);
    }
    teardown();
}

/* A statement's limit shrinks to the deadline; past it, the op is refused. */
static void limits_a_statement_to_the_deadline(void)
{
    struct pg_op *op = pg_op_new(0);
    if (op == NULL) {
        CHECK(0);
        return;
    }
    op->deadline = INFINITY;
    CHECK(pg_op_limit(op, 30) == 0 && op->timeout == 30);
    op->deadline = clock_mono() + 1000;
    CHECK(pg_op_limit(op, 30) == 0 && op->timeout == 30);
    CHECK(pg_op_limit(op, 5000) == 0 && op->timeout > 0 && op->timeout <= 1000);
    op->deadline = clock_mono() - 1;
    CHECK(pg_op_limit(op, 30) == -1 && op->timeout == 0);
    CHECK(strstr(op->err, "deadline has passed") != NULL);
    pg_op_free(op);
}

static void accepts_only_names_steeple_creates(void)
{
    const char *ok[] = {"tenant_abc123", "steeple_template", "steeple_template_new",
                        "steeple_doctor_x1"};
    const char *bad[] = {"tenant_", "tenant_ABC", "tenant_a-b", "postgres", "steeple_doctor_",
                         "tenant_a\"; DROP", "steeple_template2"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECK(pg_op_ddl_name_ok(ok[i], strlen(ok[i])));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!pg_op_ddl_name_ok(bad[i], strlen(bad[i])));
    char longname[80];
    memset(longname, 'a', sizeof longname);
    memcpy(longname, "tenant_", 7);
    longname[64] = '\0';
    CHECK(!pg_op_ddl_name_ok(longname, 64));
}

/* Runs a CREATE/DROP DATABASE operation to its end. */
static void run_ddl(int kind, const char *name, const char *tmpl, struct outcome *o)
{
    struct pg_op *op = pg_op_new_ddl(kind, name, tmpl);
    CHECK(op != NULL);
    if (op == NULL)
        return;
    op->pool = main_pool();
    op->timeout = pg_op_timeout(pg_cluster_settings(cl));
    op->deadline = INFINITY;
    op->done = on_done;
    op->arg = o;
    CHECK(pg_op_wait(op) == PG_OP_PENDING);
    CHECK(run_until(&o->calls));
}

/* The statements are written on the connection and run: neither creates
 * nor drops a database here (that waits for checkpoints). */
static void writes_create_and_drop_database(void)
{
    if (setup(2) != 0) {
        CHECK(0);
        return;
    }
    char name[64], tmpl[64];
    snprintf(name, sizeof name, "steeple_doctor_pgop%ld", (long)getpid());
    snprintf(tmpl, sizeof tmpl, "steeple_doctor_nosuch%ld", (long)getpid());
    struct outcome dropped = {0}, created = {0};
    run_ddl('d', name, NULL, &dropped); /* IF EXISTS: nothing to drop */
    CHECK(!dropped.unavailable && dropped.status == PGRES_COMMAND_OK);
    run_ddl('c', name, tmpl, &created);
    CHECK(!created.unavailable && created.status == PGRES_FATAL_ERROR);
    CHECK(strstr(created.err, tmpl) != NULL); /* the template named, quoted */
    teardown();
}

/* ---- prepared statements (one connection: pool_max 1) -------------------- */

/* Runs sql with one parameter (NULL: none) on p within timeout seconds;
 * returns after its outcome. */
static void run_within(struct pg_pool *p, const char *sql, const char *param, double timeout,
                       struct outcome *o)
{
    memset(o, 0, sizeof *o);
    int n = param != NULL;
    size_t len = param ? strlen(param) : 0;
    char *text;
    struct pg_op *op = pg_op_new_statement(sql, strlen(sql), n, n ? len + 1 : 0, &text);
    CHECK(op != NULL);
    if (op == NULL)
        return;
    if (n) {
        memcpy(text, param, len + 1);
        op->values[0] = text;
        op->lengths[0] = (int)len;
    }
    op->pool = p;
    op->timeout = timeout;
    op->deadline = INFINITY;
    op->done = on_done;
    op->arg = o;
    CHECK(pg_op_start(op) == PG_OP_PENDING);
    CHECK(run_until(&o->calls));
}

static void run_sql(struct pg_pool *p, const char *sql, const char *param, struct outcome *o)
{
    run_within(p, sql, param, pg_op_timeout(pg_cluster_settings(cl)), o);
    CHECK(!o->unavailable);
}

/* A fresh cluster of one connection that prepares at most max statements:
 * its pool, or NULL. */
static struct pg_pool *one_connection(int max)
{
    if (setup_prepared(1, max) != 0) {
        CHECK(0);
        return NULL;
    }
    return main_pool();
}

/* Runs sql, a statement without rows and parameters, on p. */
static void command(struct pg_pool *p, const char *sql)
{
    struct outcome o;
    run_sql(p, sql, NULL, &o);
    if (o.status != PGRES_COMMAND_OK) {
        printf("# %s: %s\n", sql, o.err);
        CHECK(0);
    }
}

/* The statements cached on p's one connection. */
static int cached(struct pg_pool *p)
{
    struct pg_conn *c = idle_conn(p);
    CHECK(c != NULL);
    int n = c ? pg_conn_prepared_count(c) : -1;
    if (c)
        pg_pool_release(c, 1);
    return n;
}

/* Checks the first column of sql's (one parameter) first row. */
static void expect(struct pg_pool *p, const char *sql, const char *param, const char *want)
{
    struct outcome o;
    run_sql(p, sql, param, &o);
    CHECK(o.status == PGRES_TUPLES_OK);
    if (strcmp(o.value, want) != 0) {
        printf("# %s (%s): got '%s' %s, want '%s'\n", sql, param ? param : "-", o.value, o.err, want);
        CHECK(0);
    }
}

/* Checks the names of the statements the server holds for p's connection. */
static void server_holds(struct pg_pool *p, const char *names)
{
    expect(p, "SELECT string_agg(name, ',' ORDER BY name) FROM pg_prepared_statements", NULL,
           names);
}

static void prepares_once_up_to_the_bound(void)
{
    struct pg_pool *p = one_connection(2);
    if (p == NULL)
        return;
    expect(p, "SELECT $1::int + 1", "41", "42");
    CHECK(cached(p) == 1);
    expect(p, "SELECT $1::int + 1", "1", "2"); /* by name */
    CHECK(cached(p) == 1);
    expect(p, "SELECT 'no parameters'", NULL, "no parameters"); /* never prepared */
    CHECK(cached(p) == 1);
    expect(p, "SELECT $1::int + 2", "1", "3");
    CHECK(cached(p) == 2);
    expect(p, "SELECT $1::int + 3", "1", "4"); /* past the bound: unnamed */
    expect(p, "SELECT $1::int + 3", "2", "5");
    CHECK(cached(p) == 2);
    expect(p, "SELECT $1::int + 1", "9", "10");
    expect(p, "SELECT count(*) FROM pg_prepared_statements", NULL, "2");
    server_holds(p, "s1,s2");
    teardown();
}

static void a_failed_prepare_is_the_statements_error(void)
{
    struct pg_pool *p = one_connection(4);
    if (p == NULL)
        return;
    struct outcome o;
    run_sql(p, "SELEC $1", "x", &o);
    CHECK(o.status == PGRES_FATAL_ERROR && strcmp(o.sqlstate, "42601") == 0);
    CHECK(strstr(o.err, "syntax error") != NULL);
    CHECK(cached(p) == 0);
    /* a run that fails after Parse succeeded keeps its statement */
    run_sql(p, "SELECT $1::int", "abc", &o);
    CHECK(o.status == PGRES_FATAL_ERROR && strcmp(o.sqlstate, "22P02") == 0);
    CHECK(cached(p) == 1);
    expect(p, "SELECT $1::int", "7", "7");
    expect(p, "SELECT count(*) FROM pg_prepared_statements", NULL, "1");
    teardown();
}

static void a_stale_plan_prepares_again(void)
{
    struct pg_pool *p = one_connection(4);
    if (p == NULL)
        return;
    struct outcome o;
    const char *sql = "SELECT * FROM stale WHERE a = $1";
    command(p, "CREATE TEMP TABLE stale (a int)");
    command(p, "INSERT INTO stale VALUES (1)");
    expect(p, sql, "1", "1");
    CHECK(cached(p) == 1);
    command(p, "ALTER TABLE stale ADD COLUMN b int");
    run_sql(p, sql, "1", &o);
    CHECK(o.status == PGRES_FATAL_ERROR && strcmp(o.sqlstate, "0A000") == 0);
    CHECK(cached(p) == 0);
    expect(p, sql, "1", "1"); /* prepared again, as s2 */
    CHECK(cached(p) == 1);
    server_holds(p, "s1,s2");
    teardown();
}

/* The timeout covers Parse and the run: a run past it breaks the connection,
 * and the next connection prepares the statement afresh. */
static void one_timeout_covers_prepare_and_run(void)
{
    struct pg_pool *p = one_connection(4);
    if (p == NULL)
        return;
    struct outcome o;
    run_within(p, "SELECT pg_sleep($1::float8)", "0.2", 30, &o); /* prepared: s1 */
    CHECK(o.status == PGRES_TUPLES_OK);
    run_within(p, "SELECT pg_sleep($1::float8 * 2)", "3", 0.3, &o);
    CHECK(o.unavailable && strstr(o.err, "statement timeout") != NULL);
    expect(p, "SELECT $1::text || 'ok'", "still ", "still ok"); /* a new connection */
    CHECK(cached(p) == 1);
    teardown();
}

static const struct tap_case cases[] = {
    {"one timeout covers the prepare and the run", one_timeout_covers_prepare_and_run},
    {"prepares a statement with parameters once, up to the bound",
     prepares_once_up_to_the_bound},
    {"a failed prepare is the statement's error and is not cached",
     a_failed_prepare_is_the_statements_error},
    {"a statement whose cached plan went stale is prepared again", a_stale_plan_prepares_again},
    {"limits a statement to the deadline", limits_a_statement_to_the_deadline},
    {"accepts only names steeple creates", accepts_only_names_steeple_creates},
    {"writes CREATE and DROP DATABASE on the connection", writes_create_and_drop_database},
    {"runs a statement with parameters and gives the connection back",
     runs_a_statement_with_parameters},
    {"an SQL error is a result, not unavailable", an_sql_error_is_a_result},
    {"takes an idle connection at once", takes_an_idle_connection_at_once},
    {"waits for a connection given back", waits_for_a_connection_given_back},
    {"sends once more on another connection, then gives up", sends_once_more_then_gives_up},
    {"a wait ends at the deadline", a_wait_ends_at_the_deadline},
    {"cancels a wait", cancels_a_wait},
    {"cancels a running statement", cancels_a_running_statement},
    {"a pin hands its connection over at the end of a statement", a_pin_hands_over_at_the_end},
};

int main(void)
{
    if (getenv("DATABASE_URL") == NULL) {
        printf("1..0 # SKIP DATABASE_URL is not set (spec/run.sh c starts a server)\n");
        return 0;
    }
    return tap_run(cases, (int)(sizeof cases / sizeof cases[0]));
}
