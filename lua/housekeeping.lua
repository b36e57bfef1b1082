-- Work the server does on its own, driven by the core's once-a-second
-- app.tick() on every worker (never two ticks at once on one worker):
--
--   * spool replay, on every worker (each replays its own spool files),
--     every spool.replay_interval_s while records are pending: a pass over
--     the spool (messaging/webhook.lua) that goes on at the next tick when
--     its time is up, so that every record is reached however many wait;
--   * the outbound sweep, on worker 0, every telnyx.sweep_interval_s (0:
--     never): queued messages whose time has come (after a restart, a lost task);
--   * the broadcast dispatcher, on every worker, every
--     messaging.dispatch_interval_s (0: never): the turns of the churches
--     whose broadcasts are due (broadcasts/dispatch.lua); on worker 0, at
--     the same interval, the gauge steeple_broadcast_stall_seconds;
--   * the janitor, on worker 0, at start-up and every
--     tenants.janitor_interval_s (0: never): undoes registrations cut short.
--
-- Failures are logged as warnings and tried again at the next interval. Each
-- tick also sets the gauge steeple_lua_heap_bytes (this worker's Lua heap).

local config = require "steeple.config"
local steeple = require "steeple"
local log = require "steeple.log"
local metrics = require "steeple.metrics"
local spool = require "steeple.spool"
local errors = require "errors"
local registration = require "auth.registration"
local outbound = require "messaging.outbound"
local dispatch = require "broadcasts.dispatch"
local webhook = require "messaging.webhook"

local pcall, type = pcall, type

local M = {}

metrics.describe("steeple_spool_pending", "gauge", "Webhooks in the spool, waiting to be applied.")
metrics.describe("steeple_lua_heap_bytes", "gauge", "Memory of the workers' Lua states, set once a second.")

local REPLAY_BATCH <const> = 200
local REPLAY_BUDGET_S <const> = 0.5

local last = { janitor = -math.huge, outbox = -math.huge, replay = -math.huge, broadcasts = -math.huge,
               stall = -math.huge }
local pass -- the replay pass under way, kept from one tick to the next

-- Runs fn unless it ran less than interval seconds ago; logs its failure.
local function every(name, interval, now, fn)
    if interval <= 0 or now - last[name] < interval then return end
    last[name] = now
    local ok, err = pcall(fn)
    if ok then return end
    if type(err) == "table" and err.sqlstate == "42P01" then
        log.debug(name .. ": the registry is not migrated yet")
        return
    end
    log.warn(name .. " failed; trying again later", { error = errors.describe(err) })
end

-- Batches of the pass until it is over or the tick has spent
-- REPLAY_BUDGET_S on it (a backlog of a long outage drains at the
-- database's pace, not one batch per tick); the next tick goes on with it.
local function replay()
    local applied, started = 0, steeple.clock()
    while spool.pending() > 0 do
        pass = pass or webhook.pass()
        applied = applied + webhook.replay(pass, REPLAY_BATCH)
        if pass.over then pass = nil break end
        if steeple.clock() - started >= REPLAY_BUDGET_S then break end
    end
    if applied > 0 then log.info("spooled webhooks applied", { applied = applied }) end
    metrics.set("steeple_spool_pending", nil, spool.pending())
end

function M.tick()
    local now = steeple.clock()
    -- summed over the workers by /metrics
    metrics.set("steeple_lua_heap_bytes", nil, math.floor(collectgarbage("count") * 1024))
    every("replay", config.spool.replay_interval_s, now, replay)
    if config.db.url == nil then return end
    every("broadcasts", config.messaging.dispatch_interval_s, now, dispatch.tick)
    if steeple.worker() ~= 0 then return end
    every("outbox", config.telnyx.sweep_interval_s, now, outbound.sweep)
    every("stall", config.messaging.dispatch_interval_s, now, dispatch.report_stall)
    every("janitor", config.tenants.janitor_interval_s, now, registration.sweep)
end

return M
