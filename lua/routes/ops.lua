-- Operations: liveness and metrics. Neither touches a database.
local metrics = require "steeple.metrics"

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

return {
    ["/health"] = { GET = health },
    ["/metrics"] = { GET = render_metrics },
}
