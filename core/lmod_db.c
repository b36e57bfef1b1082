/* lmod_db.c — the `steeple.db` module: PostgreSQL from Lua, never blocking.
 *
 *   db.registry()                  handle of the registry database
 *   db.pool(server, dbname)        handle of any database of a configured server
 *   db.servers([tenants_only])     server keys
 *   db.server_key(key)             the key of the server `key` finds (a named
 *                                  server is found by its address too), or nil
 *   db.maintenance(server)         handle of the database named in the server's URL
 *   h:query(sql, ...)              rows, count   (one pooled connection, then back)
 *   h:copy(sql, data)              count: runs "COPY ... FROM STDIN" and sends data,
 *                                  a string or a list of strings (core/pg_copy.c)
 *   h:acquire()                    conn: a connection kept until conn:release()
 *   conn:query(sql, ...)           rows, count   (transactions: see lua/db.lua)
 *   conn:exec(script)              runs several statements without parameters
 *   conn:copy(sql, data)           count, as h:copy (inside a transaction)
 *   conn:release()                 also on __close and __gc
 *   db.null                        SQL NULL in rows and parameters (= cjson.null)
 *   db.bytea(s)                    a binary parameter
 *   db.create_database(server, name [, template]), db.drop_database(server, name)
 *                                  names: tenant_[a-z0-9]+, steeple_template,
 *                                  steeple_template_new (a template being built),
 *                                  steeple_doctor_[a-z0-9]+ (checked before SQL)
 *   db.close_pool(server, dbname)  closes this worker's connections to it
 *   db.deadline(ms)                the rest of this request waits for connections
 *                                  and runs statements at most ms from now (then
 *                                  "unavailable"); db.deadline(nil) lifts it
 *
 * Parameters are $1, $2, ... only: nil/db.null, booleans, numbers, strings,
 * db.bytea. Rows are tables by column name with values by type: integers,
 * booleans, floats, text, numeric as text, timestamps as ISO 8601 in UTC,
 * bytea as a binary string, json/jsonb decoded. Failures raise an error table
 * { kind = "sql"|"unavailable", sqlstate =, message =, detail =,
 *   constraint =, retry_after = } (see lua/db.lua for helpers). */
#include "host.h"
#include "lmod.h"
#include "lua_host.h"
#include "pg_conn.h"
#include "pg_copy.h"
#include "pg_pool.h"
#include "request.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HANDLE_MT "steeple.db.handle"
#define CONN_MT "steeple.db.conn"
#define BYTEA_MT "steeple.db.bytea"
#define ERROR_MT "steeple.db.error"
#define NAME_MAX_LEN 63
#define DDL_SQL_MAX 256

static const char decode_key = 'j'; /* registry[&decode_key] = cjson.decode */

struct handle {
    char server[96];
    char dbname[NAME_MAX_LEN + 1];
};

/* A pinned connection. The userdata and a running statement share it: the
 * last of them to let go gives the connection back and frees the slot, so a
 * statement still running when its request dies never touches freed
 * memory. */
struct conn_slot {
    struct pg_conn *conn;
    int busy;       /* a statement is in flight */
    int released;   /* the userdata let go (release, __close or __gc) */
    double timeout; /* seconds per statement; 0 = db.statement_timeout_ms */
};

struct conn_ud {
    struct conn_slot *slot; /* NULL once released */
};

struct db_op {
    struct request *r; /* NULL once the request has gone */
    struct pg_pool *pool;
    struct pg_waiter *waiter;
    struct pg_conn *conn;
    struct conn_slot *pinned; /* conn:query: the connection is pinned */
    int acquire_only;
    int copy; /* COPY FROM STDIN: values[0] is the data */
    int ddl; /* CREATE or DROP DATABASE: the SQL is built on the connection */
    char ddl_name[NAME_MAX_LEN + 1];
    char ddl_template[NAME_MAX_LEN + 1];
    int retried;
    double timeout; /* the core's limit on the statement, seconds */
    PGresult *res;
    int unavailable;
    double retry_after;
    char err[256];
    int nparams;
    Oid *types;
    char **values;
    int *lengths;
    int *formats;
    char *sql;
};

/* ---- errors -------------------------------------------------------------- */

static void set_field(lua_State *L, const char *k, const char *v)
{
    if (v == NULL)
        return;
    size_t n = strcspn(v, "\n");
    lua_pushlstring(L, v, n);
    lua_setfield(L, -2, k);
}

/* Raises { kind, message, ... } with the error metatable. */
static int raise_error(lua_State *L, const struct db_op *op)
{
    lua_createtable(L, 0, 6);
    if (op->res != NULL) {
        set_field(L, "kind", "sql");
        set_field(L, "sqlstate", PQresultErrorField(op->res, PG_DIAG_SQLSTATE));
        set_field(L, "message", PQresultErrorField(op->res, PG_DIAG_MESSAGE_PRIMARY));
        set_field(L, "detail", PQresultErrorField(op->res, PG_DIAG_MESSAGE_DETAIL));
        set_field(L, "constraint", PQresultErrorField(op->res, PG_DIAG_CONSTRAINT_NAME));
    } else {
        set_field(L, "kind", "unavailable");
        set_field(L, "message", op->err[0] ? op->err : "the database is unavailable");
        lua_pushnumber(L, op->retry_after > 0 ? ceil(op->retry_after) : 1);
        lua_setfield(L, -2, "retry_after");
    }
    luaL_setmetatable(L, ERROR_MT);
    return lua_error(L);
}

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "sqlstate");
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "message");
    if (lua_isstring(L, 2))
        lua_pushfstring(L, "database error %s: %s", lua_tostring(L, 2), luaL_optstring(L, 4, "?"));
    else
        lua_pushfstring(L, "database %s: %s", luaL_optstring(L, 3, "error"),
                        luaL_optstring(L, 4, "?"));
    return 1;
}

/* ---- values ------------------------------------------------------------- */

/* PostgreSQL's ISO output "YYYY-MM-DD HH:MM:SS[.f]+HH[:MM]" as UTC ISO 8601
 * "YYYY-MM-DDTHH:MM:SS[.f]Z"; anything else is pushed unchanged. */
static void push_timestamptz(lua_State *L, const char *s, size_t n)
{
    int Y, M, D, h, m, sec, oh = 0, om = 0, used = 0;
    char frac[16] = "";
    if (n < 22 || sscanf(s, "%4d-%2d-%2d %2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &used) != 6) {
        lua_pushlstring(L, s, n);
        return;
    }
    const char *p = s + used;
    if (*p == '.') {
        size_t f = strspn(p + 1, "0123456789");
        if (f > sizeof frac - 2)
            f = sizeof frac - 2;
        frac[0] = '.';
        memcpy(frac + 1, p + 1, f);
        frac[f + 1] = '\0';
        p += 1 + strspn(p + 1, "0123456789");
    }
    int sign = *p == '-' ? -1 : 1;
    if ((*p != '+' && *p != '-') || sscanf(p + 1, "%2d:%2d", &oh, &om) < 1) {
        lua_pushlstring(L, s, n);
        return;
    }
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
                    .tm_hour = h, .tm_min = m, .tm_sec = sec};
    time_t t = timegm(&tm) - sign * (oh * 3600 + om * 60);
    gmtime_r(&t, &tm);
    char out[64];
    snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    lua_pushstring(L, out);
}

static void push_bytea(lua_State *L, const char *s)
{
    size_t len = 0;
    unsigned char *bin = PQunescapeBytea((const unsigned char *)s, &len);
    if (bin == NULL)
        luaL_error(L, "out of memory");
    luaL_Buffer b;
    luaL_buffinit(L, &b); /* may raise: copy first, free, then push */
    char *dst = luaL_prepbuffsize(&b, len);
    memcpy(dst, bin, len);
    PQfreemem(bin);
    luaL_addsize(&b, len);
    luaL_pushresult(&b);
}

static void push_value(lua_State *L, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        lua_pushlightuserdata(L, NULL);
        return;
    }
    const char *v = PQgetvalue(res, row, col);
    size_t n = (size_t)PQgetlength(res, row, col);
    switch (PQftype(res, col)) {
    case 16: /* bool */
        lua_pushboolean(L, v[0] == 't');
        return;
    case 20: case 21: case 23: case 26: /* int8, int2, int4, oid */
        lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
        return;
    case 700: case 701: /* float4, float8 */
        lua_pushnumber(L, strtod(v, NULL));
        return;
    case 17: /* bytea */
        push_bytea(L, v);
        return;
    case 1184: /* timestamptz */
        push_timestamptz(L, v, n);
        return;
    case 114: case 3802: /* json, jsonb */
        lua_rawgetp(L, LUA_REGISTRYINDEX, &decode_key);
        lua_pushlstring(L, v, n);
        lua_call(L, 1, 1);
        return;
    default: /* text, varchar, uuid, numeric, date, ...: as text */
        lua_pushlstring(L, v, n);
        return;
    }
}

/* Pushes rows (a list of tables by column name) and the affected count. */
static int push_rows(lua_State *L, const PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    luaL_checkstack(L, ncols + 4, "too many columns");
    lua_createtable(L, nrows, 0); /* rows */
    for (int c = 0; c < ncols; c++)
        lua_pushstring(L, PQfname(res, c)); /* rows names... */
    int names = lua_gettop(L) - ncols + 1;
    for (int r = 0; r < nrows; r++) {
        lua_createtable(L, 0, ncols); /* rows names... row */
        for (int c = 0; c < ncols; c++) {
            lua_pushvalue(L, names + c);
            push_value(L, res, r, c);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, names - 1, r + 1);
    }
    lua_settop(L, names - 1); /* rows */
    const char *count = PQcmdTuples((PGresult *)res);
    lua_pushinteger(L, *count ? (lua_Integer)strtoll(count, NULL, 10) : nrows);
    return 2;
}

/* ---- parameters ---------------------------------------------------------- */

/* Copies the SQL and the arguments from index `first` on into one block, so
 * they outlive the binding's frame. Raises on a value that cannot be a
 * parameter (before anything is allocated). */
static struct db_op *new_op(lua_State *L, int sql_idx, int first)
{
    size_t sqllen;
    const char *sql = luaL_checklstring(L, sql_idx, &sqllen);
    int top = lua_gettop(L), n = top >= first ? top - first + 1 : 0;
    luaL_argcheck(L, n <= 256, first, "too many parameters");
    char nums[256][32];
    size_t total = sizeof(struct db_op) + sqllen + 1;
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        size_t len = 0;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            break;
        case LUA_TLIGHTUSERDATA:
            luaL_argcheck(L, lua_touserdata(L, idx) == NULL, idx, "only db.null may be passed");
            break;
        case LUA_TBOOLEAN:
            len = 5;
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx))
                snprintf(nums[i], sizeof nums[i], "%lld", (long long)lua_tointeger(L, idx));
            else {
                double d = lua_tonumber(L, idx);
                luaL_argcheck(L, isfinite(d), idx, "NaN and infinities cannot be stored");
                snprintf(nums[i], sizeof nums[i], "%.17g", d);
            }
            len = strlen(nums[i]);
            break;
        case LUA_TSTRING:
            lua_tolstring(L, idx, &len);
            luaL_argcheck(L, memchr(lua_tostring(L, idx), '\0', len) == NULL, idx,
                          "a string with a NUL byte: pass it as db.bytea(s)");
            break;
        case LUA_TUSERDATA:
            luaL_checkudata(L, idx, BYTEA_MT);
            lua_getiuservalue(L, idx, 1);
            lua_tolstring(L, -1, &len);
            lua_pop(L, 1);
            break;
        default:
            luaL_argerror(L, idx, "cannot be a parameter (encode tables to JSON first)");
        }
        total += len + 1;
    }
    total += (size_t)n * (sizeof(Oid) + sizeof(char *) + 2 * sizeof(int));
    struct db_op *op = calloc(1, total);
    if (op == NULL) {
        luaL_error(L, "out of memory");
        return NULL;
    }
    char *p = (char *)(op + 1); /* widest alignment first */
    op->nparams = n;
    op->values = (char **)p;
    p += (size_t)n * sizeof(char *);
    op->types = (Oid *)p;
    p += (size_t)n * sizeof(Oid);
    op->lengths = (int *)p;
    p += (size_t)n * sizeof(int);
    op->formats = (int *)p;
    p += (size_t)n * sizeof(int);
    op->sql = p;
    memcpy(p, sql, sqllen + 1);
    p += sqllen + 1;
    for (int i = 0; i < n; i++) { /* nothing below raises */
        int idx = first + i;
        const char *v = NULL;
        size_t len = 0;
        switch (lua_type(L, idx)) {
        case LUA_TBOOLEAN:
            v = lua_toboolean(L, idx) ? "true" : "false";
            len = strlen(v);
            break;
        case LUA_TNUMBER:
            v = nums[i];
            len = strlen(v);
            break;
        case LUA_TSTRING:
            v = lua_tolstring(L, idx, &len);
            break;
        case LUA_TUSERDATA:
            lua_getiuservalue(L, idx, 1);
            v = lua_tolstring(L, -1, &len); /* anchored by the userdata */
            lua_pop(L, 1);
            op->types[i] = 17; /* bytea */
            op->formats[i] = 1;
            break;
        default:
            break; /* NULL */
        }
        if (v != NULL) {
            memcpy(p, v, len);
            p[len] = '\0';
            op->values[i] = p;
            op->lengths[i] = (int)len;
            p += len + 1;
        }
    }
    return op;
}

static void free_op(struct db_op *op)
{
    if (op->res)
        PQclear(op->res);
    free(op);
}

/* Frees an operation that never started and raises "unavailable" with its
 * message: the message is copied first, so nothing is left to leak. */
static int fail_now(lua_State *L, struct db_op *op)
{
    struct db_op copy = {0};
    copy.unavailable = 1;
    copy.retry_after = op->retry_after;
    memcpy(copy.err, op->err, sizeof copy.err);
    free_op(op);
    return raise_error(L, &copy);
}


/* ---- the operation ------------------------------------------------------- */

static int no_results(lua_State *L, void *data)
{
    (void)L;
    (void)data;
    return 0;
}

/* The request waits no more: resume it; the continuation reads op. */
static void complete(struct db_op *op)
{
    struct request *r = op->r;
    op->r = NULL;
    request_resume(r, no_results, NULL);
    free_op(op);
}

static void on_result(struct pg_conn *c, PGresult *res, const char *err, void *arg);

/* Quotes the names with PQescapeIdentifier into op->sql's buffer. */
static int build_ddl(struct db_op *op)
{
    PGconn *pg = pg_conn_libpq(op->conn);
    char *name = PQescapeIdentifier(pg, op->ddl_name, strlen(op->ddl_name));
    char *tmpl = op->ddl_template[0]
                     ? PQescapeIdentifier(pg, op->ddl_template, strlen(op->ddl_template))
                     : NULL;
    int rc = -1;
    if (name && (tmpl || !op->ddl_template[0])) {
        if (op->ddl == 'c' && tmpl)
            snprintf(op->sql, DDL_SQL_MAX, "CREATE DATABASE %s TEMPLATE %s", name, tmpl);
        else if (op->ddl == 'c')
            snprintf(op->sql, DDL_SQL_MAX, "CREATE DATABASE %s", name);
        else
            snprintf(op->sql, DDL_SQL_MAX, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
        rc = 0;
    }
    PQfreemem(name);
    PQfreemem(tmpl);
    return rc;
}

/* The core's own limit on a statement: the server's statement_timeout
 * fires first (a clean SQL error on a connection that stays usable); this
 * only catches a server or network that stopped answering. */
static double client_timeout(double statement_timeout_s)
{
    return statement_timeout_s * 1.25 + 1.0;
}

/* The core's limit for statements on a pool's connections. */
static double pool_timeout(struct pg_pool *pool)
{
    return client_timeout(pg_cluster_settings(pg_pool_cluster(pool))->statement_timeout_s);
}

/* A statement's limit: `limit`, or less when the request set a database
 * deadline (db.deadline). Returns 0 when that deadline has passed. */
static double within_deadline(const struct request *r, double limit)
{
    double left = request_db_time_left(r);
    if (left < limit)
        return left > 0 ? left : 0;
    return limit;
}

/* The message of an operation refused because the request's deadline passed. */
#define DEADLINE_PASSED "the request's database deadline has passed"

static int send(struct db_op *op)
{
    if (op->ddl && build_ddl(op) != 0)
        return -1;
    if (op->copy)
        return pg_copy_start(op->conn, op->sql, op->values[0], (size_t)op->lengths[0], op->timeout,
                             on_result, op);
    return pg_conn_query(op->conn, op->sql, op->nparams, op->types,
                         (const char *const *)op->values, op->lengths, op->formats, op->timeout,
                         on_result, op);
}

static void on_acquired(struct pg_conn *c, const char *err, double retry_after, void *arg);

/* Waits for a pooled connection; on immediate failure completes with it. */
static void wait_conn(struct db_op *op)
{
    op->waiter = pg_pool_wait(op->pool, op->r ? request_db_time_left(op->r) : INFINITY, on_acquired,
                              op, &op->retry_after, op->err, sizeof op->err);
    if (op->waiter == NULL) {
        op->unavailable = 1;
        complete(op);
    }
}

static void on_acquired(struct pg_conn *c, const char *err, double retry_after, void *arg)
{
    struct db_op *op = arg;
    op->waiter = NULL;
    if (c == NULL) {
        op->unavailable = 1;
        op->retry_after = retry_after;
        snprintf(op->err, sizeof op->err, "%s", err);
        complete(op);
        return;
    }
    op->conn = c;
    if (op->acquire_only) {
        complete(op);
        return;
    }
    if (send(op) != 0) {
        pg_pool_release(c, 0);
        op->conn = NULL;
        if (op->retried++ == 0) {
            wait_conn(op);
            return;
        }
        snprintf(op->err, sizeof op->err, "cannot send the query");
        op->unavailable = 1;
        complete(op);
    }
}

static void on_result(struct pg_conn *c, PGresult *res, const char *err, void *arg)
{
    struct db_op *op = arg;
    int failed = err != NULL;
    if (failed) /* err lives in the connection, which may be freed below */
        snprintf(op->err, sizeof op->err, "%s", err);
    if (op->pinned) {
        op->pinned->busy = 0;
        if (op->pinned->released) { /* let go while the statement ran */
            pg_pool_release(c, 0);
            free(op->pinned);
        }
    } else {
        pg_pool_release(c, !failed);
    }
    op->conn = NULL;
    if (op->r == NULL) { /* the request went away meanwhile */
        if (res)
            PQclear(res);
        free_op(op);
        return;
    }
    if (failed) {
        /* once sent, a statement may have run: it is never sent again */
        op->unavailable = 1;
        complete(op);
        return;
    }
    op->res = res;
    complete(op);
}

static void cancel(void *data)
{
    struct db_op *op = data;
    op->r = NULL;
    if (op->waiter) {
        pg_waiter_cancel(op->waiter);
        free_op(op);
    }
    /* else a query runs: on_result frees the op */
}

/* Continuation after the operation: rows, count or the error. */
static int query_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct db_op *op = (struct db_op *)ctx;
    if (op->unavailable)
        return raise_error(L, op);
    ExecStatusType st = PQresultStatus(op->res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return raise_error(L, op);
    if (op->copy) {
        lua_pushinteger(L, (lua_Integer)strtoll(PQcmdTuples(op->res), NULL, 10));
        return 1;
    }
    return push_rows(L, op->res);
}

/* Suspends the request on op; the continuation finishes it. */
static int park(lua_State *L, struct request *r, struct db_op *op)
{
    request_suspend(r, cancel, op);
    return lua_yieldk(L, 0, (lua_KContext)op, query_done);
}

static struct pg_pool *pool_of(lua_State *L, const struct handle *h)
{
    char err[160];
    struct host *w = script_host(L);
    struct pg_pool *p = w->cluster ? pg_cluster_pool(w->cluster, h->server, h->dbname, err,
                                                     sizeof err)
                                   : NULL;
    if (p == NULL)
        luaL_error(L, "%s", w->cluster ? err : "no database is configured");
    return p;
}

/* Leaves at index 3 the data of h:copy or conn:copy as one string. */
static void copy_args(lua_State *L)
{
    luaL_checkstring(L, 2);
    lua_settop(L, 3);
    if (lua_type(L, 3) != LUA_TTABLE) {
        luaL_checkstring(L, 3);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b); /* ... data buffer */
    lua_Integer n = luaL_len(L, 3);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 3, i) != LUA_TSTRING) /* ... data buffer item */
            luaL_error(L, "bad argument #2 to 'copy' (item %d is not a string)", (int)i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b); /* ... data joined */
    lua_replace(L, 3);
}

static int run_handle(lua_State *L, int copy)
{
    struct handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    struct request *r = request_check(L, "db query");
    struct pg_pool *pool = pool_of(L, h);
    if (copy)
        copy_args(L);
    struct db_op *op = new_op(L, 2, 3);
    op->copy = copy;
    op->r = r;
    op->pool = pool;
    op->timeout = within_deadline(r, pool_timeout(pool));
    if (op->timeout == 0) {
        snprintf(op->err, sizeof op->err, DEADLINE_PASSED);
        return fail_now(L, op);
    }
    op->conn = pg_pool_try_acquire(pool);
    if (op->conn && send(op) == 0)
        return park(L, r, op);
    if (op->conn) { /* went bad while idle */
        pg_pool_release(op->conn, 0);
        op->conn = NULL;
    }
    op->waiter = pg_pool_wait(pool, request_db_time_left(r), on_acquired, op, &op->retry_after, op->err,
                              sizeof op->err);
    if (op->waiter == NULL)
        return fail_now(L, op);
    return park(L, r, op);
}

static int handle_query(lua_State *L)
{
    return run_handle(L, 0);
}

static int handle_copy(lua_State *L)
{
    return run_handle(L, 1);
}

/* ---- pinned connections -------------------------------------------------- */

static struct conn_slot *check_conn(lua_State *L)
{
    struct conn_ud *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->slot == NULL)
        luaL_error(L, "attempt to use a released connection");
    return c->slot;
}

static int conn_release(lua_State *L)
{
    struct conn_ud *c = luaL_checkudata(L, 1, CONN_MT);
    struct conn_slot *slot = c->slot;
    c->slot = NULL;
    if (slot == NULL)
        return 0;
    if (slot->busy) { /* the statement's end gives it back */
        slot->released = 1;
        return 0;
    }
    pg_pool_release(slot->conn, 1); /* closed instead when left inside a transaction */
    free(slot);
    return 0;
}

static int acquired(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct db_op *op = (struct db_op *)ctx;
    if (op->unavailable)
        return raise_error(L, op);
    struct conn_ud *c = lua_touserdata(L, -1); /* created before the wait */
    struct conn_slot *slot = calloc(1, sizeof *slot);
    if (slot == NULL) {
        pg_pool_release(op->conn, 1);
        op->conn = NULL;
        return luaL_error(L, "out of memory");
    }
    slot->conn = op->conn;
    op->conn = NULL;
    c->slot = slot;
    return 1;
}

static int handle_acquire(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    struct request *r = request_check(L, "db acquire");
    struct pg_pool *pool = pool_of(L, h);
    lua_settop(L, 1);
    struct conn_ud *c = lua_newuserdatauv(L, sizeof *c, 0); /* closed until filled */
    c->slot = NULL;
    luaL_setmetatable(L, CONN_MT);
    struct conn_slot *slot = calloc(1, sizeof *slot);
    if (slot == NULL)
        return luaL_error(L, "out of memory");
    slot->conn = pg_pool_try_acquire(pool);
    if (slot->conn) {
        c->slot = slot;
        return 1;
    }
    free(slot);
    struct db_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return luaL_error(L, "out of memory");
    op->r = r;
    op->pool = pool;
    op->acquire_only = 1;
    op->waiter = pg_pool_wait(pool, request_db_time_left(r), on_acquired, op, &op->retry_after, op->err,
                              sizeof op->err);
    if (op->waiter == NULL)
        return fail_now(L, op);
    request_suspend(r, cancel, op);
    return lua_yieldk(L, 0, (lua_KContext)op, acquired);
}

/* mode: 'q' a statement, 's' a script (conn:exec), 'c' a COPY (conn:copy) */
static int run_pinned(lua_State *L, int mode)
{
    struct conn_slot *c = check_conn(L);
    struct request *r = request_check(L, "db query");
    if (c->busy)
        return luaL_error(L, "the connection is running another statement");
    if (mode == 's')
        lua_settop(L, 2);
    if (mode == 'c')
        copy_args(L);
    struct db_op *op = new_op(L, 2, 3);
    if (mode == 's')
        op->nparams = -1;
    op->copy = mode == 'c';
    op->r = r;
    op->pool = NULL;
    op->conn = c->conn;
    op->pinned = c;
    const struct pg_settings *s = pg_cluster_settings(script_host(L)->cluster);
    op->timeout = within_deadline(r, c->timeout > 0 ? c->timeout : client_timeout(s->statement_timeout_s));
    if (op->timeout == 0) {
        snprintf(op->err, sizeof op->err, DEADLINE_PASSED);
        return fail_now(L, op);
    }
    if (send(op) != 0) {
        snprintf(op->err, sizeof op->err, "the connection is broken");
        return fail_now(L, op);
    }
    c->busy = 1;
    return park(L, r, op);
}

static int conn_query(lua_State *L)
{
    return run_pinned(L, 'q');
}

static int conn_copy(lua_State *L)
{
    return run_pinned(L, 'c');
}

/* conn:exec(script): several statements, no parameters (migrations). */
static int conn_exec(lua_State *L)
{
    return run_pinned(L, 's');
}

/* conn:set_timeout(seconds): the client-side limit for this connection's
 * statements (migrations run longer than requests). */
static int conn_set_timeout(lua_State *L)
{
    struct conn_slot *c = check_conn(L);
    lua_Number t = luaL_checknumber(L, 2);
    luaL_argcheck(L, t > 0 && t <= 86400, 2, "between 0 and 86400 seconds");
    c->timeout = t;
    return 0;
}

static int conn_backend_pid(lua_State *L)
{
    struct conn_slot *c = check_conn(L);
    lua_pushinteger(L, pg_conn_backend_pid(c->conn));
    return 1;
}

/* ---- module functions ---------------------------------------------------- */

/* Database names the core accepts: letters, digits, '_' and '-'. */
static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int push_handle(lua_State *L, const char *server, const char *dbname)
{
    struct handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    snprintf(h->server, sizeof h->server, "%s", server);
    snprintf(h->dbname, sizeof h->dbname, "%s", dbname);
    luaL_setmetatable(L, HANDLE_MT);
    return 1;
}

static int l_pool(lua_State *L)
{
    size_t sn, dn;
    const char *server = luaL_checklstring(L, 1, &sn);
    const char *dbname = luaL_checklstring(L, 2, &dn);
    luaL_argcheck(L, sn < sizeof ((struct handle *)0)->server, 1, "server key too long");
    luaL_argcheck(L, name_ok(dbname, dn), 2, "not a valid database name");
    struct host *w = script_host(L);
    if (w->cluster == NULL || pg_cluster_server_dbname(w->cluster, server) == NULL)
        return luaL_error(L, "unknown database server '%s'", server);
    return push_handle(L, server, dbname);
}

static int l_registry(lua_State *L)
{
    struct host *w = script_host(L);
    const char *dbname = w->cluster ? pg_cluster_server_dbname(w->cluster, "main") : NULL;
    if (dbname == NULL)
        return luaL_error(L, "no database is configured (DATABASE_URL)");
    return push_handle(L, "main", dbname);
}

/* db.maintenance(server): the handle of the database named in the server's
 * URL (the registry on main; e.g. postgres on a tenant server). */
static int l_maintenance(lua_State *L)
{
    const char *server = luaL_checkstring(L, 1);
    struct host *w = script_host(L);
    const char *dbname = w->cluster ? pg_cluster_server_dbname(w->cluster, server) : NULL;
    if (dbname == NULL)
        return luaL_error(L, "unknown database server '%s'", server);
    return push_handle(L, server, dbname);
}

static int l_servers(lua_State *L)
{
    struct host *w = script_host(L);
    const char *keys[64];
    int n = w->cluster ? pg_cluster_server_keys(w->cluster, keys, 64, lua_toboolean(L, 1)) : 0;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, keys[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_server_key(lua_State *L)
{
    const char *key = luaL_checkstring(L, 1);
    struct host *w = script_host(L);
    const char *found = w->cluster ? pg_cluster_server_key(w->cluster, key) : NULL;
    if (found)
        lua_pushstring(L, found);
    else
        lua_pushnil(L);
    return 1;
}

static int l_bytea(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TSTRING);
    lua_newuserdatauv(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, BYTEA_MT);
    return 1;
}

/* Names CREATE/DROP DATABASE accept: tenant_ then lower-case letters and
 * digits, the template and the name it is built under, or doctor's scratch
 * databases. */
static int ddl_name_ok(const char *s, size_t n)
{
    const char *rest = NULL;
    if (n > NAME_MAX_LEN)
        return 0;
    if (strncmp(s, "tenant_", 7) == 0)
        rest = s + 7;
    else if (strncmp(s, "steeple_doctor_", 15) == 0)
        rest = s + 15;
    else
        return strcmp(s, "steeple_template") == 0 || strcmp(s, "steeple_template_new") == 0;
    if (*rest == '\0')
        return 0;
    for (; *rest; rest++)
        if (!((*rest >= 'a' && *rest <= 'z') || (*rest >= '0' && *rest <= '9')))
            return 0;
    return 1;
}

/* db.create_database(server, name [, template]) / db.drop_database(server,
 * name): on a connection to the server's maintenance database. Names are
 * checked before any SQL and quoted with PQescapeIdentifier. Returns true. */
static int ddl(lua_State *L, int kind)
{
    size_t sn, nn, tn = 0;
    const char *server = luaL_checklstring(L, 1, &sn);
    const char *name = luaL_checklstring(L, 2, &nn);
    const char *tmpl = kind == 'c' ? luaL_optlstring(L, 3, NULL, &tn) : NULL;
    luaL_argcheck(L, ddl_name_ok(name, nn), 2, "not a database name steeple creates");
    luaL_argcheck(L, tmpl == NULL || ddl_name_ok(tmpl, tn), 3, "not a template steeple made");
    struct request *r = request_check(L, kind == 'c' ? "db.create_database" : "db.drop_database");
    struct host *w = script_host(L);
    const char *maint = w->cluster ? pg_cluster_server_dbname(w->cluster, server) : NULL;
    if (maint == NULL)
        return luaL_error(L, "unknown database server '%s'", server);
    struct handle h;
    snprintf(h.server, sizeof h.server, "%s", server);
    snprintf(h.dbname, sizeof h.dbname, "%s", maint);
    struct pg_pool *pool = pool_of(L, &h);
    if (kind == 'd')
        pg_cluster_close_database(w->cluster, server, name);
    struct db_op *op = calloc(1, sizeof *op + DDL_SQL_MAX);
    if (op == NULL)
        return luaL_error(L, "out of memory");
    op->sql = (char *)(op + 1);
    op->ddl = kind;
    snprintf(op->ddl_name, sizeof op->ddl_name, "%s", name);
    snprintf(op->ddl_template, sizeof op->ddl_template, "%s", tmpl ? tmpl : "");
    op->r = r;
    op->pool = pool;
    op->timeout = pool_timeout(pool);
    op->waiter = pg_pool_wait(pool, request_db_time_left(r), on_acquired, op, &op->retry_after, op->err,
                              sizeof op->err);
    if (op->waiter == NULL)
        return fail_now(L, op);
    return park(L, r, op);
}

static int l_create_database(lua_State *L) { return ddl(L, 'c'); }
static int l_drop_database(lua_State *L) { return ddl(L, 'd'); }

/* db.deadline(ms | nil): see the module comment. */
static int l_deadline(lua_State *L)
{
    struct request *r = request_check(L, "db.deadline");
    double ms = luaL_optnumber(L, 1, 0);
    luaL_argcheck(L, ms >= 0, 1, "must not be negative");
    request_set_db_deadline(r, ms / 1000.0);
    return 0;
}

/* db.close_pool(server, dbname): closes this worker's connections to it. */
static int l_close_pool(lua_State *L)
{
    const char *server = luaL_checkstring(L, 1);
    const char *dbname = luaL_checkstring(L, 2);
    struct host *w = script_host(L);
    if (w->cluster)
        pg_cluster_close_database(w->cluster, server, dbname);
    return 0;
}

static int handle_tostring(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    lua_pushfstring(L, "database %s/%s", h->server, h->dbname);
    return 1;
}

static int handle_index(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "server") == 0)
        lua_pushstring(L, h->server);
    else if (strcmp(k, "dbname") == 0)
        lua_pushstring(L, h->dbname);
    else if (strcmp(k, "query") == 0)
        lua_pushcfunction(L, handle_query);
    else if (strcmp(k, "copy") == 0)
        lua_pushcfunction(L, handle_copy);
    else if (strcmp(k, "acquire") == 0)
        lua_pushcfunction(L, handle_acquire);
    else
        lua_pushnil(L);
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"query", conn_query}, {"exec", conn_exec}, {"copy", conn_copy}, {"release", conn_release},
    {"set_timeout", conn_set_timeout},
    {"backend_pid", conn_backend_pid},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"registry", l_registry}, {"pool", l_pool}, {"servers", l_servers},
    {"server_key", l_server_key}, {"bytea", l_bytea},
    {"create_database", l_create_database}, {"drop_database", l_drop_database},
    {"close_pool", l_close_pool}, {"maintenance", l_maintenance}, {"deadline", l_deadline},
    {NULL, NULL},
};

int luaopen_steeple_db(lua_State *L)
{
    luaL_newmetatable(L, HANDLE_MT);
    lua_pushcfunction(L, handle_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, handle_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, CONN_MT);
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_release);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, conn_release);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, BYTEA_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, ERROR_MT);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_getglobal(L, "require"); /* cjson.decode for json columns */
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &decode_key);
    lua_pop(L, 1);

    luaL_newlib(L, funcs);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
