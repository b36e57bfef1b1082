/* lmod_csv.c — the `steeple.csv` module: CSV files to PostgreSQL COPY text.
 *
 *   csv.to_copy(text, columns, max_rows)
 *       columns: a list of { name, max_chars [, kind] } (at most 8), matched
 *       against the header row (trimmed, case-insensitive). kind "e164":
 *       the column holds phone numbers, written to the text in E.164 (the
 *       rules of core/phone.h); a record whose number is empty or no number
 *       is rejected ("refused"). Returns a table
 *         { text = "<line>\t<col1>\t...\n"... (COPY text, \N for empty),
 *           rows = <data records>, accepted = <records in text>,
 *           found = { <name> = true, ... } (columns the header has),
 *           rejected = { { row = <line>, reason = "too_long" |
 *                          "invalid_encoding" | "unterminated_quote" |
 *                          "refused", column = <name> or nil }, ... } }
 *       or nil, "binary" (a NUL byte), "no_header" (empty, or a header
 *       that is not UTF-8) or "too_many_rows" (more than max_rows records).
 *       Raises on misuse and out of memory. See core/csv.h for the format. */
#include "csv.h"
#include "lmod.h"
#include "phone.h"

#include <lauxlib.h>
#include <string.h>

#define COPY_MT "steeple.csv.copy"

static const char *const reasons[] = {
    [CSV_TOO_LONG] = "too_long",
    [CSV_BAD_ENCODING] = "invalid_encoding",
    [CSV_UNTERMINATED] = "unterminated_quote",
    [CSV_REFUSED] = "refused",
};

/* The column kinds and what each writes; "text" is the value as it is. */
static const char *const kinds[] = {"text", "e164", NULL};
static csv_convert_fn *const converts[] = {NULL, phone_e164};

/* The kind at the top of the stack (nil: "text"), as an index of kinds;
 * raises on another value. */
static int check_kind(lua_State *L, int idx)
{
    if (lua_isnil(L, -1))
        return 0;
    int k = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *kind = lua_tostring(L, -1);
        while (kinds[k] != NULL && strcmp(kind, kinds[k]) != 0)
            k++;
    }
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING && kinds[k] != NULL, idx,
                  "a column's kind is \"text\" or \"e164\"");
    return k;
}

/* Reads the columns argument into cols; names stay anchored by it. */
static int check_columns(lua_State *L, int idx, struct csv_column *cols)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)luaL_len(L, idx);
    luaL_argcheck(L, n >= 1 && n <= CSV_MAX_COLUMNS, idx, "1 to 8 columns");
    for (int i = 0; i < n; i++) {
        luaL_argcheck(L, lua_geti(L, idx, i + 1) == LUA_TTABLE, idx, "each column is { name, max_chars [, kind] }");
        lua_geti(L, -1, 1); /* column name */
        lua_geti(L, -2, 2); /* column name max */
        lua_geti(L, -3, 3); /* column name max kind */
        cols[i].name = lua_tostring(L, -3);
        lua_Integer max = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : -1;
        luaL_argcheck(L, lua_type(L, -3) == LUA_TSTRING && max >= 0, idx, "each column is { name, max_chars [, kind] }");
        cols[i].max_chars = (size_t)max;
        cols[i].convert = converts[check_kind(L, idx)];
        lua_pop(L, 4);
    }
    return n;
}

static int copy_gc(lua_State *L)
{
    csv_copy_free(luaL_checkudata(L, 1, COPY_MT));
    return 0;
}

static void push_rejects(lua_State *L, const struct csv_copy *out, const struct csv_column *cols)
{
    lua_createtable(L, (int)out->nrejects, 0); /* result rejected */
    for (size_t i = 0; i < out->nrejects; i++) {
        const struct csv_reject *r = &out->rejects[i];
        lua_createtable(L, 0, 3); /* result rejected item */
        lua_pushinteger(L, (lua_Integer)r->line);
        lua_setfield(L, -2, "row");
        lua_pushstring(L, reasons[r->reason]);
        lua_setfield(L, -2, "reason");
        if (r->column >= 0) {
            lua_pushstring(L, cols[r->column].name);
            lua_setfield(L, -2, "column");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "rejected"); /* result */
}

static int l_to_copy(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    struct csv_column cols[CSV_MAX_COLUMNS];
    int ncols = check_columns(L, 2, cols);
    lua_Integer max_rows = luaL_checkinteger(L, 3);
    luaL_argcheck(L, max_rows >= 0, 3, "must not be negative");
    lua_settop(L, 3);
    /* the output's buffers belong to this userdata until freed below */
    struct csv_copy *out = lua_newuserdatauv(L, sizeof *out, 0); /* ud */
    memset(out, 0, sizeof *out);
    luaL_setmetatable(L, COPY_MT);
    int rc = csv_copy(text, len, cols, ncols, (size_t)max_rows, out);
    if (rc == CSV_NOMEM)
        return luaL_error(L, "out of memory");
    if (rc != CSV_OK) {
        csv_copy_free(out);
        lua_pushnil(L);
        lua_pushstring(L, rc == CSV_BINARY ? "binary" : rc == CSV_NO_HEADER ? "no_header" : "too_many_rows");
        return 2;
    }
    lua_createtable(L, 0, 5); /* ud result */
    lua_pushlstring(L, out->text.data ? out->text.data : "", out->text.len);
    lua_setfield(L, -2, "text");
    lua_pushinteger(L, (lua_Integer)out->rows);
    lua_setfield(L, -2, "rows");
    lua_pushinteger(L, (lua_Integer)out->accepted);
    lua_setfield(L, -2, "accepted");
    lua_createtable(L, 0, ncols); /* ud result found */
    for (int c = 0; c < ncols; c++) {
        if (out->found[c]) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, cols[c].name);
        }
    }
    lua_setfield(L, -2, "found");
    push_rejects(L, out, cols);
    csv_copy_free(out);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"to_copy", l_to_copy},
    {NULL, NULL},
};

int luaopen_steeple_csv(lua_State *L)
{
    luaL_newmetatable(L, COPY_MT);
    lua_pushcfunction(L, copy_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
