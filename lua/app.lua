-- The entry point the C core calls for every request: app.handle(req).
--
-- req (built by the core): id, method, path, query (raw string), headers
-- (lower-case names), body (string), remote. app adds req.params (path
-- parameters) and the methods below, routes the request, runs the handler and
-- turns its response table into what the core sends:
--
--   status, body, header lines ("Name: value\n"...), route pattern, tenant id
--
-- A handler returns { status = 200, json = value } or { status = 204 } or
-- { status = 200, body = "text", headers = { ["content-type"] = "..." } },
-- optionally with tenant = id for the access log. It raises errors.raise(code,
-- opts) for API errors; any other error becomes 500 internal_error and is
-- logged with its traceback under the request id.

local router = require "router"
local db = require "db"
local errors = require "errors"
local json = require "json"
local config = require "steeple.config"
local log = require "steeple.log"
local routes = require "routes"
local housekeeping = require "housekeeping"

local type, pairs, ipairs, xpcall, tostring = type, pairs, ipairs, xpcall, tostring
local setmetatable, require = setmetatable, require
local traceback = debug.traceback
local find, lower, upper, gsub, char, format = string.find, string.lower, string.upper, string.gsub, string.char,
    string.format
local concat = table.concat

local M = {}

local JSON_TYPE <const> = "application/json; charset=utf-8"

local codec = json.new(config.limits.json_max_depth)
M.codec = codec

local r = router.new()
for _, name in ipairs(routes) do
    for pattern, methods in pairs(require("routes." .. name)) do
        r:add(pattern, methods)
    end
end
M.router = r

local BODY_METHODS <const> = { POST = true, PUT = true, PATCH = true }

-- Request methods available to handlers ------------------------------------

local Request = {}
Request.__index = Request

-- Returns the body decoded as a JSON object; raises invalid_json otherwise.
function Request:json()
    if self._json == nil then
        local value = codec.decode_object(self.body)
        if value == nil then errors.raise("invalid_json") end
        self._json = value
    end
    return self._json
end

-- Each two-hex-digit escape, in either case, to its byte: gsub with a table
-- decodes in C, without a Lua call per escape.
local ESCAPES <const> = {}
for i = 0, 255 do
    local hi, lo = format("%x", i >> 4), format("%x", i & 15)
    for _, h in ipairs { hi, upper(hi) } do
        for _, l in ipairs { lo, upper(lo) } do ESCAPES[h .. l] = char(i) end
    end
end

local function unescape(s)
    s = gsub(s, "+", " ")
    return (gsub(s, "%%(%x%x)", ESCAPES))
end

-- Returns the query parameters as a table (the first value of a repeated name).
function Request:args()
    if self._args == nil then
        local args = {}
        for pair in self.query:gmatch("[^&]+") do
            local k, v = pair:match("^([^=]*)=?(.*)$")
            k = unescape(k)
            if args[k] == nil then args[k] = unescape(v) end
        end
        self._args = args
    end
    return self._args
end

-- Turning responses into what the core sends --------------------------------

local JSON_LINE <const> = "Content-Type: " .. JSON_TYPE .. "\n"

local function header_lines(headers, has_json)
    if headers == nil then return has_json and JSON_LINE or nil end
    local out, n = {}, 0
    if has_json and not headers["content-type"] then
        n = 1
        out[1] = JSON_LINE
    end
    for k, v in pairs(headers) do
        n = n + 1
        out[n] = k .. ": " .. tostring(v) .. "\n"
    end
    return concat(out)
end

local function send(res, route, req)
    local body = res.body
    if res.json ~= nil then body = codec.encode(res.json) end
    if req.method == "HEAD" then body = nil end
    return res.status or 200, body, header_lines(res.headers, res.json ~= nil), route, res.tenant
end

local function on_error(e)
    if errors.is(e) or db.is_transient(e) then return e end
    return { trace = traceback(tostring(e), 2) }
end

-- True when the body's Content-Type is `want` (a plain type/subtype),
-- parameters such as charset aside.
local function media_type_ok(req, want)
    local ct = req.headers["content-type"]
    if ct == nil then return false end
    local quoted = gsub(want, "%p", "%%%0")
    ct = lower(ct)
    return find(ct, "^%s*" .. quoted .. "%s*$") ~= nil or find(ct, "^%s*" .. quoted .. "%s*;") ~= nil
end

-- The largest body the core reads for a request to method and path, asked
-- when its header block is complete: the route's own body_bytes (see
-- router.lua), else limits.body_bytes.
function M.body_limit(method, path)
    if method == "HEAD" then method = "GET" end
    local handler, _, _, body_bytes = r:match(method, path)
    return handler and body_bytes or config.limits.body_bytes
end

-- Handles one request; returns status, body, header lines, route, tenant.
-- req.body_too_large: the core refused to read its body (over the route's
-- limit); it gets 413 once routing has found a route.
function M.handle(req)
    setmetatable(req, Request)
    local method = req.method == "HEAD" and "GET" or req.method
    local handler, params, pattern, _, media_type = r:match(method, req.path)
    if handler == nil then
        local why, allow = params, pattern
        if why == "method_not_allowed" then
            return send(errors.response(req.id, why, { headers = { Allow = allow } }), nil, req)
        end
        return send(errors.response(req.id, "not_found"), nil, req)
    end
    req.params = params
    req.route = pattern -- read by the core when the handler fails
    if req.body_too_large then
        return send(errors.response(req.id, "payload_too_large"), pattern, req)
    end
    -- a route whose requests carry no body (media_type = false: adding a
    -- list member, pausing a broadcast) has no content type to check
    if BODY_METHODS[method] and media_type ~= false and not media_type_ok(req, media_type or "application/json") then
        local message = media_type and "The request body must be sent as " .. media_type .. "."
        return send(errors.response(req.id, "unsupported_media_type", { message = message }), pattern, req)
    end
    local ok, res = xpcall(handler, on_error, req)
    if ok then
        if type(res) ~= "table" then
            log.error("handler returned no response table", { route = pattern })
            return send(errors.response(req.id, "internal_error"), pattern, req)
        end
        return send(res, pattern, req)
    end
    if errors.is(res) then
        return send(errors.to_response(req.id, res), pattern, req)
    end
    -- unreachable, or a failure worth trying again (statement timeout,
    -- lost connection, deadlock): the client may retry
    if db.is_transient(res) then
        log.warn("database unavailable", { route = pattern, error = res.message, sqlstate = res.sqlstate })
        return send(errors.response(req.id, "service_unavailable",
            { headers = { ["Retry-After"] = res.retry_after or 1 } }), pattern, req)
    end
    log.error("handler failed", { route = pattern, error = res.trace })
    return send(errors.response(req.id, "internal_error"), pattern, req)
end

-- Called by the core once a second on each worker, as a background task.
M.tick = housekeeping.tick

-- Called by the core once when the worker is told to stop, as a background
-- task it ends after a second.
M.stop = housekeeping.stop

return M
