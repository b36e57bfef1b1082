/* fuzz_json.c — request-body JSON decoding (lua/json.lua over lua-cjson).
 *
 * Feeds: byte 0 picks max_depth (1..80: the events codec uses 16, the app
 * limits.json_max_depth, 64 by default); the rest is the body given to
 * json.new(max_depth).decode_object, in a Lua state set up as the server's
 * (steeple_openlibs: the real preloads, package.path = the repo's lua/).
 * Asserts:
 *   - decode_object never raises: it returns a table, or nil, "invalid_json"
 *     and a string reason;
 *   - an accepted body is valid UTF-8 without NUL, starts with an object,
 *     and its value is nested at most max_depth deep;
 *   - no key is repeated: the members counted in the text by an independent
 *     scanner (here, in C) equal the string keys of the decoded value, so a
 *     repeated key cannot have been merged silently;
 *   - no accepted value holds a number out of the double range (+-inf);
 *   - round trip: codec.encode of the value succeeds and decode_object of
 *     that text accepts it and gives an equal value (numbers compared at
 *     the 14 significant digits the encoder writes). */
#include "fuzz_util.h"
#include "lua_libs.h"

static lua_State *L;
static int check_ref;

static const char harness[] =
    "local json = require 'json'\n"
    "local type, next, pairs, format, tointeger = type, next, pairs, string.format, math.tointeger\n"
    "local codecs = {}\n"
    "local function depth(v)\n"
    "  if type(v) ~= 'table' then return 0 end\n"
    "  local d = 0\n"
    "  for _, x in next, v do local e = depth(x); if e > d then d = e end end\n"
    "  return d + 1\n"
    "end\n"
    "local function keys(v)\n"
    "  if type(v) ~= 'table' then return 0 end\n"
    "  local n = 0\n"
    "  for k, x in next, v do\n"
    "    if type(k) == 'string' then n = n + 1 end\n"
    "    n = n + keys(x)\n"
    "  end\n"
    "  return n\n"
    "end\n"
    "local function finite(v)\n"
    "  if type(v) == 'number' then return v == v and v ~= math.huge and v ~= -math.huge end\n"
    "  if type(v) ~= 'table' then return true end\n"
    "  for _, x in next, v do if not finite(x) then return false end end\n"
    "  return true\n"
    "end\n"
    "local function num_eq(a, b)\n"
    "  return a == b or format('%.14g', a) == format('%.14g', b)\n"
    "end\n"
    "local function equal(a, b, path)\n"
    "  if type(a) ~= type(b) then return false, path .. ': ' .. type(a) .. ' vs ' .. type(b) end\n"
    "  if type(a) == 'number' then\n"
    "    if num_eq(a, b) then return true end\n"
    "    return false, path .. ': ' .. format('%.17g', a) .. ' vs ' .. format('%.17g', b)\n"
    "  end\n"
    "  if type(a) ~= 'table' then\n"
    "    if a == b then return true end\n"
    "    return false, path .. ': values differ'\n"
    "  end\n"
    "  for k, x in pairs(a) do\n"
    "    local ok, why = equal(x, b[k], path .. '.' .. tostring(k))\n"
    "    if not ok then return false, why end\n"
    "  end\n"
    "  for k in pairs(b) do\n"
    "    if a[k] == nil then return false, path .. '.' .. tostring(k) .. ': only after' end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "return function(max_depth, body)\n"
    "  local codec = codecs[max_depth]\n"
    "  if not codec then codec = json.new(max_depth); codecs[max_depth] = codec end\n"
    "  local v, code, reason = codec.decode_object(body)\n"
    "  if v == nil then\n"
    "    if code ~= 'invalid_json' or type(reason) ~= 'string' then\n"
    "      return nil, 'refused without invalid_json and a reason'\n"
    "    end\n"
    "    return -1\n"
    "  end\n"
    "  if type(v) ~= 'table' then return nil, 'accepted a ' .. type(v) end\n"
    "  if depth(v) > max_depth then\n"
    "    return nil, format('accepted nesting %d > max_depth %d', depth(v), max_depth)\n"
    "  end\n"
    "  if not utf8.len(body) or body:find('\\0', 1, true) then\n"
    "    return nil, 'accepted invalid UTF-8 or a NUL byte'\n"
    "  end\n"
    "  if not finite(v) then return -2 end\n"
    "  local ok, text = pcall(codec.encode, v)\n"
    "  if not ok then return nil, 'cannot encode an accepted value: ' .. tostring(text) end\n"
    "  local again, c2, r2 = codec.decode_object(text)\n"
    "  if again == nil then\n"
    "    return nil, 'the encoding of an accepted value is refused: ' .. tostring(r2) .. ' in ' .. text\n"
    "  end\n"
    "  local same, why = equal(v, again, '$')\n"
    "  if not same then return nil, 'round trip changed the value at ' .. why end\n"
    "  return keys(v)\n"
    "end\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static struct fuzz_lua_budget budget = {0, 512u << 20};
    L = lua_newstate(fuzz_lua_alloc, &budget);
    if (L == NULL)
        abort();
    steeple_openlibs(L, fuzz_lua_dir());
    if (luaL_loadbuffer(L, harness, sizeof harness - 1, "=fuzz_json") != LUA_OK ||
        lua_pcall(L, 0, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        abort();
    }
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    fuzz_lua_hook_on(L, 0); /* coverage of json.lua's lines */
    return 0;
}

/* Members of the objects in s, a JSON text lua-cjson accepted: strings that
 * stand where an object expects a key. */
static long count_members(const uint8_t *s, size_t n)
{
    char stack[1024]; /* '{' or '[' per open container */
    int top = -1, expect_key = 0;
    long members = 0;
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '"':
            if (expect_key)
                members++;
            expect_key = 0;
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            break;
        case '{':
        case '[':
            FUZZ_CHECK(top + 1 < (int)sizeof stack, "nesting deeper than any max_depth");
            stack[++top] = (char)s[i];
            expect_key = s[i] == '{';
            break;
        case '}':
        case ']':
            top--;
            expect_key = 0;
            break;
        case ',':
            expect_key = top >= 0 && stack[top] == '{';
            break;
        default:
            break;
        }
    }
    return members;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int max_depth = 1 + data[0] % 80;
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushinteger(L, max_depth);
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    if (lua_pcall(L, 2, 2, 0) != LUA_OK)
        fuzz_fail("decode_object raised: %s", lua_tostring(L, -1));
    if (lua_isnil(L, -2))
        fuzz_fail("max_depth %d: %s", max_depth, lua_tostring(L, -1));
    long keys = (long)lua_tointeger(L, -2);
    lua_pop(L, 2);
    FUZZ_CHECK(keys != -2, "accepted a number that decodes to inf");
    if (keys >= 0) {
        long members = count_members(data + 1, size - 1);
        FUZZ_CHECK(members == keys, "accepted a body with %ld members that decodes to %ld keys",
                   members, keys);
    }
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
