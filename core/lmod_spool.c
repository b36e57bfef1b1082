/* lmod_spool.c — the `steeple.spool` module: this worker's durable spool.
 *
 *   spool.append(data)   true once data is durable (fsync done); or nil, err:
 *                        "too large" (over 4 MiB), "busy" (too much queued),
 *                        "stopping", "out of memory", an I/O error text, or
 *                        "spool is not configured". Suspends the request;
 *                        raises outside one.
 *   spool.pending()      durable records not yet done (0 if not configured)
 *   spool.peek([max [, from]])
 *                        the oldest not-done records, oldest first, as a list
 *                        of { id = <integer>, data = <string> }; max is
 *                        1..1000, default 100; from (an id, default 0): only
 *                        records from that one on (ids grow from the oldest
 *                        record to the newest, so the last id + 1 pages on).
 *                        Does not mark them. Empty if not configured; nil,
 *                        err on a read error.
 *   spool.done(id)       true; raises on an id that is not a pending or done
 *                        record of this spool (or when not configured). In
 *                        any order: a record done is not handed out again,
 *                        after a restart neither (its mark is saved)
 *   spool.stats()        { files, pending, pending_bytes, skipped_bytes,
 *                          fsyncs, failed_batches }
 *   spool.configured()   whether this worker has a spool
 *
 * Replay is at-least-once: a record handed out by peek may be handed out
 * again after a restart if done() was not called or its progress not saved
 * (it is saved soon after done(), on the loop). */
#include "host.h"
#include "lmod.h"
#include "lua_host.h"
#include "request.h"
#include "spool.h"

#include <errno.h>
#include <lauxlib.h>
#include <string.h>


#define PEEK_DEFAULT 100
#define PEEK_MAX 1000

static struct spool *spool_of(lua_State *L)
{
    return script_host(L)->spool;
}

static int push_fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static const char *refusal(int e)
{
    switch (e) {
    case EMSGSIZE:
        return "too large";
    case EAGAIN:
        return "busy";
    case ESHUTDOWN:
        return "stopping";
    case ENOMEM:
        return "out of memory";
    default:
        return strerror(e);
    }
}

/* The result of an append, as the spool callback hands it over. */
struct append_result {
    const char *err; /* NULL: durable */
};

static int append_retval(lua_State *L, void *data)
{
    const struct append_result *res = data;
    if (res->err != NULL)
        return push_fail(L, res->err);
    lua_pushboolean(L, 1);
    return 1;
}

/* spool_cb: arg is the request, parked since the append. */
static void append_done(void *arg, const char *err)
{
    struct append_result res = {err};
    request_resume(arg, append_retval, &res);
}

/* The request died while waiting: the append still completes, unheard. */
static void append_cancel(void *data)
{
    struct request *r = data;
    struct spool *s = request_host(r)->spool;
    if (s != NULL)
        spool_cancel(s, r);
}

static int l_append(lua_State *L)
{
    struct request *r = request_check(L, "spool.append");
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    struct spool *s = request_host(r)->spool;
    if (s == NULL)
        return push_fail(L, "spool is not configured");
    if (spool_append(s, data, len, append_done, r) != 0)
        return push_fail(L, refusal(errno));
    request_suspend(r, append_cancel, r);
    return lua_yield(L, 0);
}

static int l_pending(lua_State *L)
{
    struct spool *s = spool_of(L);
    lua_pushinteger(L, s ? (lua_Integer)spool_pending(s) : 0);
    return 1;
}

/* Stack: ... -> ... list */
static void push_records(lua_State *L, const struct spool_record *recs, size_t n)
{
    lua_createtable(L, (int)n, 0); /* list */
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);                            /* list rec */
        lua_pushinteger(L, (lua_Integer)(lua_Unsigned)recs[i].id); /* list rec id */
        lua_setfield(L, -2, "id");                           /* list rec */
        lua_pushlstring(L, recs[i].data, recs[i].len);       /* list rec data */
        lua_setfield(L, -2, "data");                         /* list rec */
        lua_rawseti(L, -2, (lua_Integer)i + 1);              /* list */
    }
}

static int l_peek(lua_State *L)
{
    lua_Integer max = luaL_optinteger(L, 1, PEEK_DEFAULT);
    luaL_argcheck(L, max >= 1 && max <= PEEK_MAX, 1, "between 1 and 1000");
    spool_id from = (spool_id)(lua_Unsigned)luaL_optinteger(L, 2, 0);
    struct spool *s = spool_of(L);
    if (s == NULL) {
        lua_newtable(L);
        return 1;
    }
    /* a userdata, not malloc: nothing leaks if a push below raises */
    struct spool_record *recs = lua_newuserdatauv(L, (size_t)max * sizeof *recs, 0); /* box */
    size_t n;
    if (spool_peek_from(s, from, (size_t)max, recs, &n) != 0)
        return push_fail(L, strerror(errno));
    push_records(L, recs, n); /* box list; the data stays the spool's until the next peek */
    return 1;
}

static int l_done(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    struct spool *s = spool_of(L);
    if (s == NULL || spool_done(s, (spool_id)(lua_Unsigned)id) != 0)
        return luaL_error(L, "spool.done: unknown id %I", id);
    lua_pushboolean(L, 1);
    return 1;
}

/* Stack: ... t -> ... t */
static void set_int(lua_State *L, const char *key, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v); /* t v */
    lua_setfield(L, -2, key);           /* t */
}

static int l_stats(lua_State *L)
{
    struct spool_stats st = {0};
    struct spool *s = spool_of(L);
    if (s != NULL)
        spool_stats(s, &st);
    lua_createtable(L, 0, 6); /* t */
    set_int(L, "files", st.files);
    set_int(L, "pending", st.pending);
    set_int(L, "pending_bytes", st.pending_bytes);
    set_int(L, "skipped_bytes", st.skipped_bytes);
    set_int(L, "fsyncs", st.fsyncs);
    set_int(L, "failed_batches", st.failed_batches);
    return 1;
}

static int l_configured(lua_State *L)
{
    lua_pushboolean(L, spool_of(L) != NULL);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"append", l_append}, {"pending", l_pending}, {"peek", l_peek},         {"done", l_done},
    {"stats", l_stats},   {"configured", l_configured}, {NULL, NULL},
};

int luaopen_steeple_spool(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
