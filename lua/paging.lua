-- Keyset pages for every paged list of the API (conversations, messages,
-- and the lists to come): a cursor names the last row of a page by its sort
-- key (time, id), so a page never repeats or skips rows because others were
-- inserted meanwhile. A page asks for one row more than its limit, so the
-- last page says so: its next cursor is null.
--
--   paging.args(req)                -> limit, cursor of the query string
--                                      (limit 1-100, default 50), or raises
--                                      validation_failed
--   paging.decode_cursor(s)         -> time, id; or nil
--   paging.query(handle, limit, time_field, sql, ...)
--       -> rows (at most limit), next cursor or nil when nothing follows.
--          sql's parameters are ... and then the LIMIT, which gets limit + 1;
--          its rows come in page order and carry id and time_field (ISO 8601
--          in UTC with microseconds).
--   paging.next_json(cursor)        -> the cursor, or json.null

local crypto = require "steeple.crypto"
local errors = require "errors"
local json = require "json"
local uuid = require "uuid"

local type, tointeger, tonumber, match = type, math.tointeger, tonumber, string.match
local pack, unpack = table.pack, table.unpack

local M = {}

local DEFAULT_LIMIT <const> = 50
local MAX_LIMIT <const> = 100
-- Longer limit values are refused before they are read as numbers.
local LIMIT_MAX_BYTES <const> = 16

local function encode_cursor(time, id)
    return crypto.base64url_encode(time .. "|" .. id)
end

function M.decode_cursor(s)
    if type(s) ~= "string" or #s > 200 then return nil end
    local text = crypto.base64url_decode(s)
    local time, id = match(text or "", "^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ)|(.+)$")
    if time == nil or not uuid.valid(id) then return nil end
    return time, id
end

function M.args(req)
    local args = req:args()
    local limit, cursor = DEFAULT_LIMIT, args.cursor
    if args.limit ~= nil then
        limit = #args.limit <= LIMIT_MAX_BYTES and tointeger(tonumber(args.limit)) or nil
        if limit == nil or limit < 1 or limit > MAX_LIMIT then
            errors.raise("validation_failed", { fields = { limit = "must be an integer from 1 to 100" } })
        end
    end
    if cursor ~= nil and M.decode_cursor(cursor) == nil then
        errors.raise("validation_failed", { fields = { cursor = "is not a valid cursor" } })
    end
    return limit, cursor
end

function M.query(handle, limit, time_field, sql, ...)
    local params = pack(...)
    params.n = params.n + 1
    params[params.n] = limit + 1
    local rows = handle:query(sql, unpack(params, 1, params.n))
    if rows[limit + 1] == nil then return rows, nil end
    rows[limit + 1] = nil
    local last = rows[limit]
    return rows, encode_cursor(last[time_field], last.id)
end

function M.next_json(cursor)
    return cursor or json.null
end

return M
