-- Operations: liveness, readiness and metrics. Only /ready touches a database.
local metrics = require "steeple.metrics"
local db = require "db"
local pcall = pcall

local function health()
    return { status = 200, json = { status = "ok" } }
end

local function render_metrics()
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
