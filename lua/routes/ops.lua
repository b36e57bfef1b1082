-- Operations: liveness, readiness, metrics and the OpenAPI document. Only
-- /ready touches a database. /metrics answers only the client addresses of
-- metrics.allow (the TCP peer, never X-Forwarded-For); any other gets 404, as
-- for a path that does not exist.
local metrics = require "steeple.metrics"
local config = require "steeple.config"
local db = require "db"
local cjson = require "cjson"
local errors = require "errors"
local netaddr = require "netaddr"
local pcall, error, type, assert = pcall, error, type, assert
local io_open, match = io.open, string.match
local package = package

local JSON_TYPE <const> = "application/json; charset=utf-8"

-- The text of openapi.json in the scripts directory (where require finds
-- these modules: the first template of package.path, "<dir>/?.lua"). Read
-- once per script load; raises when it is missing or not an OpenAPI JSON
-- document, so that a broken document stops the load like a broken script.
local function read_openapi()
    local dir = match(package.path, "^([^;]*)/%?%.lua") or "."
    local path = dir .. "/openapi.json"
    local f, err = io_open(path, "rb")
    if f == nil then error("cannot read the OpenAPI document: " .. err, 0) end
    local text = f:read("a")
    f:close()
    if text == nil then error("cannot read " .. path, 0) end
    local ok, doc = pcall(cjson.decode, text) -- a plain decode: the strict one costs ten times more
    if not ok then error(path .. ": not JSON (" .. doc .. ")", 0) end
    if type(doc) ~= "table" or type(doc.openapi) ~= "string" then
        error(path .. ": not an OpenAPI document (no \"openapi\" version)", 0)
    end
    return text
end

local OPENAPI <const> = read_openapi()

local ALLOWED <const> = assert(netaddr.list(config.metrics.allow))

local function health()
    return { status = 200, json = { status = "ok" } }
end

local function render_metrics(req)
    if not ALLOWED:contains(req.remote) then errors.raise("not_found") end
    local text, err = metrics.render()
    if not text then error(err) end
    return {
        status = 200,
        body = text,
        headers = { ["Content-Type"] = "text/plain; version=0.0.4" },
    }
end

-- Ready when the registry database answers.
local function ready()
    local ok = pcall(function() return db.registry():query("SELECT 1") end)
    if ok then return { status = 200, json = { status = "ready" } } end
    return { status = 503, json = { status = "unavailable" }, headers = { ["Retry-After"] = "1" } }
end

local function openapi()
    return { status = 200, body = OPENAPI, headers = { ["Content-Type"] = JSON_TYPE } }
end

return {
    ["/health"] = { GET = health },
    ["/ready"] = { GET = ready },
    ["/metrics"] = { GET = render_metrics },
    ["/openapi.json"] = { GET = openapi },
}
