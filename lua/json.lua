-- JSON codecs over private lua-cjson instances.
--
-- Decoding is strict about what a request body may be: a single JSON
-- object, valid UTF-8, no NaN/Infinity (nor a number too large for a
-- double), no NUL byte (raw or \u0000), nesting at most
-- max_depth deep and no key repeated inside one object. In decoded tables
-- JSON null is represented by json.null (a lightuserdata, cjson's default),
-- never by a missing key.
--
-- Known limits of the lua-cjson this is built against (2.1.0):
--   * every decoded number is a Lua float (1 decodes as 1.0); use
--     math.tointeger when an integer is required;
--   * numbers are encoded with 14 significant digits, so integers above
--     10^14 lose precision: send such values as strings;
--   * raw control characters inside strings are accepted (they decode to
--     the same text as their \u00XX escapes); NUL is refused because cjson
--     would stop reading at it, and as \u0000 because no text column or
--     parameter can hold it.

local cjson = require "cjson"

local type, error, pcall, next, setmetatable, rawset = type, error, pcall, next, setmetatable, rawset
local find, sub, byte, gsub, format = string.find, string.sub, string.byte, string.gsub, string.format
local utf8_len = utf8.len
local math_type, huge = math.type, math.huge

local M = {}

local INVALID <const> = "invalid_json"
local DEFAULT_DEPTH <const> = 64

-- Characters that change the scanner's state.
local STRUCTURAL <const> = '[{}%[%]",]'

-- The end of an object member's key: a quote, optional whitespace, a colon.
local KEY_END <const> = '"[ \t\n\r]*:'

M.null = cjson.null

-- Empty arrays. Newer lua-cjson builds know how to encode an empty array;
-- with 2.1.0 every empty table encodes as {}, so the codec swaps in a
-- one-element marker for the duration of an encode and rewrites it to [].
local fallback_marker = false
if cjson.empty_array ~= nil then
    M.empty_array = cjson.empty_array
elseif cjson.empty_array_mt ~= nil then
    M.empty_array = setmetatable({}, cjson.empty_array_mt)
else
    fallback_marker = true
    M.empty_array = setmetatable({}, {
        __name = "json.empty_array",
        __metatable = false,
        __newindex = function() error("json.empty_array is read-only", 2) end,
    })
end
local empty_array = M.empty_array

-- Index of the quote that closes the string opened at index i of s, or nil.
-- A quote preceded by an odd number of backslashes is escaped.
local function string_end(s, i)
    local j = i
    while true do
        j = find(s, '"', j + 1, true)
        if not j then return nil end
        local k = j - 1
        while byte(s, k) == 92 do k = k - 1 end
        if (j - k) % 2 == 1 then return j end
    end
end

-- True when some object in the (already cjson-validated) JSON text s holds
-- the same key twice. Keys are compared after escape decoding, so "a" and
-- "\u0061" are the same key. One left-to-right pass: O(#s).
local function has_duplicate_keys(s, decode)
    local sets, depth = {}, 0 -- sets[d]: key set of an object, false for an array
    local expect_key = false
    local pos = 1
    while true do
        local i = find(s, STRUCTURAL, pos)
        if not i then return false end
        local c = byte(s, i)
        pos = i + 1
        if c == 34 then -- "
            local j = string_end(s, i)
            if not j then return true end
            if expect_key then
                local key = sub(s, i + 1, j - 1)
                if find(key, "\\", 1, true) then key = decode(sub(s, i, j)) end
                local set = sets[depth]
                if set[key] then return true end
                set[key] = true
                expect_key = false
            end
            pos = j + 1
        elseif c == 123 then -- {
            depth = depth + 1
            sets[depth] = {}
            expect_key = true
        elseif c == 91 then -- [
            depth = depth + 1
            sets[depth] = false
            expect_key = false
        elseif c == 44 then -- ,
            expect_key = sets[depth] ~= false
        else -- } or ]
            sets[depth] = nil
            depth = depth - 1
            expect_key = false
        end
    end
end

-- Number of string keys (that is, object members) in a decoded value, and
-- whether a number in it is not finite (1e999 decodes to infinity).
local function scan(t)
    local n, bad = 0, false
    for k, v in next, t do
        if type(k) == "string" then n = n + 1 end
        if type(v) == "table" then
            local m, b = scan(v)
            n, bad = n + m, bad or b
        elseif type(v) == "number" and (v ~= v or v == huge or v == -huge) then
            bad = true
        end
    end
    return n, bad
end

-- True when s holds the escape \u0000, which decodes to a NUL byte: a
-- backslash preceded by an even number of backslashes, then u0000.
local function has_nul_escape(s)
    local i = 1
    while true do
        local j = find(s, "\\u0000", i, true)
        if not j then return false end
        local k = j - 1
        while byte(s, k) == 92 do k = k - 1 end
        if (j - k) % 2 == 1 then return true end
        i = j + 1
    end
end

-- True when the JSON text s, whose decoding has `members` members, repeats a key in some
-- object. Every member's key ends with an unescaped quote followed by a
-- colon, so counting quote-colon pairs gives at least the number of
-- members in the text; when it equals the number that survived decoding
-- nothing was repeated. Only otherwise does the exact scanner run.
local function repeats_keys(s, members, decode)
    if not find(s, ",", 1, true) then return false end
    local _, upper = gsub(s, KEY_END, "")
    if upper == members then return false end
    return has_duplicate_keys(s, decode)
end

-- A private cjson instance configured for max_depth.
local function new_engine(max_depth)
    local engine = cjson.new()
    engine.decode_max_depth(max_depth)
    engine.encode_max_depth(max_depth)
    engine.decode_invalid_numbers(false)
    engine.encode_invalid_numbers(false)
    if engine.encode_empty_table_as_object then
        engine.encode_empty_table_as_object(true)
    end
    return engine
end

-- Encodes value with empty_array temporarily holding marker as its only
-- element. Raises what cjson raises, after restoring empty_array.
local function encode_marked(encode, value, marker)
    rawset(empty_array, 1, marker)
    local ok, res = pcall(encode, value)
    rawset(empty_array, 1, nil)
    if not ok then error(res, 0) end
    return res
end

-- Replaces every occurrence of the plain text `what` in s with "[]".
local function replace_plain(s, what)
    local pattern = gsub(what, "%p", "%%%0")
    return (gsub(s, pattern, "[]"))
end

-- encode() for cjson builds without empty-array support. The marker string
-- is chosen so that it does not occur in the caller's own data.
local FIRST_MARKER <const> = "\1steeple.empty_array\1"
local FIRST_MARKER_TEXT <const> = '"\\u0001steeple.empty_array\\u0001"'

local function encode_with_fallback(encode, value)
    local marker_text = FIRST_MARKER_TEXT
    local out = encode_marked(encode, value, FIRST_MARKER)
    if not find(out, marker_text, 1, true) then return out end
    local plain = encode(value)
    local n = 0
    while find(plain, marker_text, 1, true) do
        n = n + 1
        marker_text = format('"\\u0001steeple.empty_array.%d\\u0001"', n)
    end
    if n > 0 then
        out = encode_marked(encode, value, format("\1steeple.empty_array.%d\1", n))
    end
    return replace_plain(out, "[" .. marker_text .. "]")
end

-- Returns a codec whose decode_object accepts objects nested at most
-- max_depth deep (default 64) and whose encode refuses deeper values.
-- Raises when max_depth is not a positive integer.
function M.new(max_depth)
    max_depth = max_depth or DEFAULT_DEPTH
    if math_type(max_depth) ~= "integer" or max_depth < 1 then
        error("json.new: max_depth must be a positive integer", 2)
    end
    local engine = new_engine(max_depth)
    local decode, encode = engine.decode, engine.encode
    local codec = {}

    -- Returns the decoded table, or nil, "invalid_json", reason when body
    -- is not exactly one JSON object (see the module comment). The reason
    -- is for logs, never for clients. A nil body counts as empty.
    function codec.decode_object(body)
        if body == nil or body == "" then return nil, INVALID, "empty body" end
        if type(body) ~= "string" then error("json: body must be a string", 2) end
        if not find(body, "^[ \t\n\r]*{") then return nil, INVALID, "not an object" end
        if not utf8_len(body) then return nil, INVALID, "invalid UTF-8" end
        if find(body, "\0", 1, true) or has_nul_escape(body) then return nil, INVALID, "NUL byte" end
        local ok, value = pcall(decode, body)
        if not ok then return nil, INVALID, value end
        if type(value) ~= "table" then return nil, INVALID, "not an object" end
        local members, non_finite = scan(value)
        if non_finite then return nil, INVALID, "a number out of range" end
        if repeats_keys(body, members, decode) then return nil, INVALID, "duplicate key" end
        return value
    end

    -- Returns the JSON text of value. Raises on values JSON cannot carry
    -- (functions, NaN, excessive nesting, sparse arrays, ...).
    function codec.encode(value)
        if not fallback_marker then
            local ok, res = pcall(encode, value)
            if not ok then error("json: " .. res, 2) end
            return res
        end
        -- the common case in one protected encode: no empty array inside
        rawset(empty_array, 1, FIRST_MARKER)
        local ok, res = pcall(encode, value)
        rawset(empty_array, 1, nil)
        if not ok then error("json: " .. res, 2) end
        if not find(res, FIRST_MARKER_TEXT, 1, true) then return res end
        ok, res = pcall(encode_with_fallback, encode, value)
        if not ok then error("json: " .. res, 2) end
        return res
    end

    return codec
end

return M
