-- Operations: liveness, readiness and metrics. Only /ready touches a database.
-- /metrics answers only the client addresses of metrics.allow (the TCP peer,
-- never X-Forwarded-For); any other gets 404, as for a path that does not exist.
local metrics = require "steeple.metrics"
local config = require "steeple.config"
local db = require "db"
local errors = require "errors"
local netaddr = require "netaddr"
local pcall, assert, error = pcall, assert, error

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

return {
    ["/health"] = { GET = health },
    ["/ready"] = { GET = ready },
    ["/metrics"] = { GET = render_metrics },
}
