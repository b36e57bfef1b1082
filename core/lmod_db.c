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
#include "clock.h"
#include "pg_conn.h"
#include "pg_op.h"
#include "pg_pool.h"
#include "pg_value.h"
#include "request.h"

#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDLE_MT "steeple.db.handle"
#define CONN_MT "steeple.db.conn"
#define BYTEA_MT "steeple.db.bytea"
#define ERROR_MT "steeple.db.error"
#define NAME_MAX_LEN 63

static const char decode_key = 'j'; /* registry[&decode_key] = cjson.decode */

/* A database handle: db.pool(), db.registry(), db.maintenance(). Its methods
 * are handle_methods below; each finds its pool with pool_of() and runs on
 * it through a pg_op (pg_op.h), which brings the connection. */
struct handle {
    char server[96];
    char dbname[NAME_MAX_LEN + 1];
};

/* A pinned connection (h:acquire()); NULL until filled and once released. */
struct conn_ud {
    struct pg_pin *pin;
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
static int raise_error(lua_State *L, const struct pg_op *op)
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

/* A timestamptz as UTC ISO 8601 (pg_value.h); anything else unchanged. */
static void push_timestamptz(lua_State *L, const char *s, size_t n)
{
    char out[PG_VALUE_ISO_LEN];
    if (pg_value_utc_iso(s, n, out) == 0)
        lua_pushstring(L, out);
    else
        lua_pushlstring(L, s, n);
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

/* Checks the argument at idx as a parameter and returns the bytes its text
 * takes (numbers are formatted into num). Raises on a value that cannot be a
 * parameter. */
static size_t param_size(lua_State *L, int idx, char num[32])
{
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
            snprintf(num, 32, "%lld", (long long)lua_tointeger(L, idx));
        else {
            double d = lua_tonumber(L, idx);
            luaL_argcheck(L, isfinite(d), idx, "NaN and infinities cannot be stored");
            snprintf(num, 32, "%.17g", d);
        }
        len = strlen(num);
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
    return len;
}

/* Copies parameter i (checked by param_size) to p and points op at it.
 * Returns the bytes used. Never raises. */
static size_t param_copy(lua_State *L, int idx, const char *num, struct pg_op *op, int i, char *p)
{
    const char *v = NULL;
    size_t len = 0;
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        v = lua_toboolean(L, idx) ? "true" : "false";
        len = strlen(v);
        break;
    case LUA_TNUMBER:
        v = num;
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
        return 0; /* NULL */
    }
    memcpy(p, v, len);
    p[len] = '\0';
    op->values[i] = p;
    op->lengths[i] = (int)len;
    return len + 1;
}

/* Copies the SQL and the arguments from index `first` on into one block with
 * the operation, so they outlive the binding's frame. Raises on a value that
 * cannot be a parameter (before anything is allocated). */
static struct pg_op *new_op(lua_State *L, int sql_idx, int first)
{
    size_t sqllen;
    const char *sql = luaL_checklstring(L, sql_idx, &sqllen);
    int top = lua_gettop(L), n = top >= first ? top - first + 1 : 0;
    luaL_argcheck(L, n <= 256, first, "too many parameters");
    char nums[256][32];
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += param_size(L, first + i, nums[i]) + 1;
    char *p;
    struct pg_op *op = pg_op_new_statement(sql, sqllen, n, total, &p);
    if (op == NULL) {
        luaL_error(L, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) /* nothing below raises */
        p += param_copy(L, first + i, nums[i], op, i, p);
    return op;
}

/* Frees an operation that never started and raises "unavailable" with its
 * message: the message is copied first, so nothing is left to leak. */
static int fail_now(lua_State *L, struct pg_op *op)
{
    struct pg_op copy = {0};
    copy.unavailable = 1;
    copy.retry_after = op->retry_after;
    memcpy(copy.err, op->err, sizeof copy.err);
    pg_op_free(op);
    return raise_error(L, &copy);
}

/* ---- the operation, from Lua --------------------------------------------- */

static int no_results(lua_State *L, void *data)
{
    (void)L;
    (void)data;
    return 0;
}

/* The operation's outcome is in: resume its request; the continuation reads
 * the op, which is freed when this returns. */
static void resume_request(struct pg_op *op, void *arg)
{
    (void)op;
    request_resume(arg, no_results, NULL);
}

/* The request died while parked on the operation. */
static void cancel(void *data)
{
    pg_op_cancel(data);
}

/* The core's limit for statements on a pool's connections. */
static double pool_timeout(struct pg_pool *pool)
{
    return pg_op_timeout(pg_cluster_settings(pg_pool_cluster(pool)));
}

/* Ties op to the request: the request's deadline bounds its waits, and the
 * outcome resumes it. */
static void bind_request(struct pg_op *op, struct request *r)
{
    op->deadline = clock_mono() + request_db_time_left(r);
    op->done = resume_request;
    op->arg = r;
}

/* Continuation after the operation: rows, count or the error. */
static int query_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct pg_op *op = (struct pg_op *)ctx;
    if (op->unavailable)
        return raise_error(L, op);
    ExecStatusType st = PQresultStatus(op->res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return raise_error(L, op);
    if (op->copy) {
        lua_pushinteger(L, (lua_Integer)strtoll(PQcmdTuples(op->res), NULL, 10)); /* count */
        return 1;
    }
    return push_rows(L, op->res);
}

/* Suspends the request on op; the continuation finishes it. */
static int park(lua_State *L, struct request *r, struct pg_op *op, lua_KFunction k)
{
    request_suspend(r, cancel, op);
    return lua_yieldk(L, 0, (lua_KContext)op, k);
}

/* Parks the request on a started operation, or raises its refusal. */
static int started(lua_State *L, struct request *r, struct pg_op *op, enum pg_op_start how)
{
    if (how == PG_OP_REFUSED)
        return fail_now(L, op);
    return park(L, r, op, query_done);
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

/* ---- handle methods ------------------------------------------------------ */

static struct handle *check_handle(lua_State *L)
{
    return luaL_checkudata(L, 1, HANDLE_MT);
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

/* h:query(sql, ...) or, with copy, h:copy(sql, data): on a pooled
 * connection, given back at the end. */
static int run_handle(lua_State *L, int copy)
{
    struct handle *h = check_handle(L);
    struct request *r = request_check(L, "db query");
    struct pg_pool *pool = pool_of(L, h);
    if (copy)
        copy_args(L);
    struct pg_op *op = new_op(L, 2, 3);
    op->copy = copy;
    bind_request(op, r);
    op->pool = pool;
    if (pg_op_limit(op, pool_timeout(pool)) != 0) /* db.deadline passed */
        return fail_now(L, op);
    return started(L, r, op, pg_op_start(op));
}

static int handle_query(lua_State *L) { return run_handle(L, 0); }
static int handle_copy(lua_State *L) { return run_handle(L, 1); }

/* Pins conn into the connection userdata on the top of the stack. */
static int pin_into(lua_State *L, struct pg_conn *conn)
{
    struct conn_ud *c = lua_touserdata(L, -1); /* created before the wait */
    c->pin = pg_pin_new(conn);
    if (c->pin == NULL) {
        pg_pool_release(conn, 1);
        return luaL_error(L, "out of memory");
    }
    return 1;
}

/* Continuation of h:acquire(): fills the connection userdata. */
static int acquired(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct pg_op *op = (struct pg_op *)ctx;
    if (op->unavailable)
        return raise_error(L, op);
    struct pg_conn *conn = op->conn;
    op->conn = NULL;
    return pin_into(L, conn);
}

/* h:acquire(): a connection kept until conn:release(). */
static int handle_acquire(lua_State *L)
{
    struct handle *h = check_handle(L);
    struct request *r = request_check(L, "db acquire");
    struct pg_pool *pool = pool_of(L, h);
    lua_settop(L, 1);
    struct conn_ud *c = lua_newuserdatauv(L, sizeof *c, 0); /* closed until filled */
    c->pin = NULL;
    luaL_setmetatable(L, CONN_MT);
    struct pg_op *op = pg_op_new(0);
    if (op == NULL)
        return luaL_error(L, "out of memory");
    bind_request(op, r);
    op->pool = pool;
    op->acquire_only = 1;
    enum pg_op_start how = pg_op_start(op);
    if (how == PG_OP_DONE) {
        struct pg_conn *conn = op->conn;
        pg_op_free(op);
        return pin_into(L, conn);
    }
    if (how == PG_OP_REFUSED)
        return fail_now(L, op);
    return park(L, r, op, acquired);
}

/* The handle's methods: one line each. A method finds its handle with
 * check_handle(), the pool with pool_of(), and gets a connection through a
 * pg_op (acquire_only: op->conn; pg_conn_libpq() gives its PGconn). */
static const luaL_Reg handle_methods[] = {
    {"query", handle_query},
    {"copy", handle_copy},
    {"acquire", handle_acquire},
    {NULL, NULL},
};

/* ---- pinned connections -------------------------------------------------- */

static struct pg_pin *check_conn(lua_State *L)
{
    struct conn_ud *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->pin == NULL)
        luaL_error(L, "attempt to use a released connection");
    return c->pin;
}

static int conn_release(lua_State *L)
{
    struct conn_ud *c = luaL_checkudata(L, 1, CONN_MT);
    struct pg_pin *pin = c->pin;
    c->pin = NULL;
    if (pin != NULL)
        pg_pin_release(pin);
    return 0;
}

/* mode: 'q' a statement, 's' a script (conn:exec), 'c' a COPY (conn:copy) */
static int run_pinned(lua_State *L, int mode)
{
    struct pg_pin *pin = check_conn(L);
    struct request *r = request_check(L, "db query");
    if (pin->busy)
        return luaL_error(L, "the connection is running another statement");
    if (mode == 's')
        lua_settop(L, 2);
    if (mode == 'c')
        copy_args(L);
    struct pg_op *op = new_op(L, 2, 3);
    if (mode == 's')
        op->nparams = -1;
    op->copy = mode == 'c';
    bind_request(op, r);
    op->pin = pin;
    const struct pg_settings *s = pg_cluster_settings(script_host(L)->cluster);
    if (pg_op_limit(op, pin->timeout > 0 ? pin->timeout : pg_op_timeout(s)) != 0)
        return fail_now(L, op);
    return started(L, r, op, pg_op_start(op));
}

static int conn_query(lua_State *L) { return run_pinned(L, 'q'); }
static int conn_copy(lua_State *L) { return run_pinned(L, 'c'); }

/* conn:exec(script): several statements, no parameters (migrations). */
static int conn_exec(lua_State *L) { return run_pinned(L, 's'); }

/* conn:set_timeout(seconds): the client-side limit for this connection's
 * statements (migrations run longer than requests). */
static int conn_set_timeout(lua_State *L)
{
    struct pg_pin *pin = check_conn(L);
    lua_Number t = luaL_checknumber(L, 2);
    luaL_argcheck(L, t > 0 && t <= 86400, 2, "between 0 and 86400 seconds");
    pin->timeout = t;
    return 0;
}

static int conn_backend_pid(lua_State *L)
{
    struct pg_pin *pin = check_conn(L);
    lua_pushinteger(L, pg_conn_backend_pid(pin->conn));
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"query", conn_query}, {"exec", conn_exec}, {"copy", conn_copy}, {"release", conn_release},
    {"set_timeout", conn_set_timeout},
    {"backend_pid", conn_backend_pid},
    {NULL, NULL},
};

/* ---- module functions ---------------------------------------------------- */

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
    luaL_argcheck(L, pg_value_name_ok(dbname, dn), 2, "not a valid database name");
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

/* db.create_database(server, name [, template]) / db.drop_database(server,
 * name): on a connection to the server's maintenance database. Names are
 * checked before any SQL and quoted with PQescapeIdentifier. Returns true. */
static int ddl(lua_State *L, int kind)
{
    size_t sn, nn, tn = 0;
    const char *server = luaL_checklstring(L, 1, &sn);
    const char *name = luaL_checklstring(L, 2, &nn);
    const char *tmpl = kind == 'c' ? luaL_optlstring(L, 3, NULL, &tn) : NULL;
    luaL_argcheck(L, pg_op_ddl_name_ok(name, nn), 2, "not a database name steeple creates");
    luaL_argcheck(L, tmpl == NULL || pg_op_ddl_name_ok(tmpl, tn), 3, "not a template steeple made");
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
    struct pg_op *op = pg_op_new_ddl(kind, name, tmpl);
    if (op == NULL)
        return luaL_error(L, "out of memory");
    bind_request(op, r);
    op->pool = pool;
    op->timeout = pool_timeout(pool);
    return started(L, r, op, pg_op_wait(op));
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
    struct handle *h = check_handle(L);
    lua_pushfstring(L, "database %s/%s", h->server, h->dbname);
    return 1;
}

/* Fields first, then the methods (the table in the upvalue). */
static int handle_index(lua_State *L)
{
    struct handle *h = check_handle(L);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "server") == 0)
        lua_pushstring(L, h->server);
    else if (strcmp(k, "dbname") == 0)
        lua_pushstring(L, h->dbname);
    else
        lua_getfield(L, lua_upvalueindex(1), k);
    return 1;
}

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
    luaL_newlib(L, handle_methods);
    lua_pushcclosure(L, handle_index, 1);
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
