-- Work the server does on its own, driven by the core's once-a-second
-- app.tick() on every worker (never two ticks at once on one worker):
--
--   * the janitor, on worker 0 only, at start-up and every
--     tenants.janitor_interval_s (0: never): undoes registrations cut short.
--
-- Failures are logged as warnings and tried again at the next interval.

local config = require "steeple.config"
local steeple = require "steeple"
local log = require "steeple.log"
local errors = require "errors"
local registration = require "auth.registration"

local pcall, type = pcall, type

local M = {}

local last_janitor = -math.huge

local function janitor()
    local ok, err = pcall(registration.sweep)
    if ok then return end
    if type(err) == "table" and err.sqlstate == "42P01" then
        log.debug("janitor: the registry is not migrated yet")
        return
    end
    log.warn("janitor failed; trying again later", { error = errors.describe(err) })
end

function M.tick()
    if steeple.worker() ~= 0 or config.db.url == nil then return end
    local now, interval = steeple.clock(), config.tenants.janitor_interval_s
    if interval > 0 and now - last_janitor >= interval then
        last_janitor = now
        janitor()
    end
end

return M
