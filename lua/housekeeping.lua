-- Work the server does on its own, driven by the core's once-a-second
-- app.tick() on every worker (never two ticks at once on one worker):
--
--   * spool replay, on every worker of every node (each replays its own
--     spool files; a node's spool directory is its own, so this stays per
--     node), every spool.replay_interval_s while records are pending: a
--     pass over the spool (messaging/webhook.lua) that goes on at the next
--     tick when its time is up, so that every record is reached however
--     many wait;
--   * the broadcast dispatcher, on every worker, every
--     messaging.dispatch_interval_s (0: never): the turns of the churches
--     whose broadcasts are due (broadcasts/dispatch.lua, which coordinates
--     through the registry's broadcast_tenants);
--   * once per cluster, by whichever worker of whichever node holds the
--     chore's lease in the registry (chores.lua; every worker looks at each
--     interval, so a dead node's chores are taken over once its leases end):
--       - the outbound sweep, every telnyx.sweep_interval_s (0: never):
--         queued messages whose time has come (after a restart, a lost task);
--       - the gauge steeple_broadcast_stall_seconds, every
--         messaging.dispatch_interval_s (0: never); the other workers set
--         it to 0, so the holder's node shows the value and the others 0;
--       - the janitor, from start-up on, every tenants.janitor_interval_s
--         (0: never): undoes registrations cut short.
--
-- Failures are logged as warnings and tried again at the next interval. Each
-- tick also sets the gauge steeple_lua_heap_bytes (this worker's Lua heap).
--
-- When the worker is told to stop, the core calls app.stop() once (ending it
-- after a second): stop() gives back the chores' leases this worker holds,
-- so another worker takes them at its next look rather than once they end.

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
local chores = require "chores"
local db = require "db"

local pcall, type = pcall, type

local M = {}

metrics.describe("steeple_spool_pending", "gauge", "Webhooks in the spool, waiting to be applied.")
metrics.describe("steeple_lua_heap_bytes", "gauge", "Memory of the workers' Lua states, set once a second.")

local REPLAY_BATCH <const> = 200
local REPLAY_BUDGET_S <const> = 0.5

local last = { janitor = -math.huge, outbound_sweep = -math.huge, replay = -math.huge,
               broadcasts = -math.huge, broadcast_stall = -math.huge }
local pass -- the replay pass under way, kept from one tick to the next

-- Runs fn under pcall; logs its failure (a warning: `what`).
local function guarded(name, what, fn)
    local ok, err = pcall(fn)
    if ok then return end
    if type(err) == "table" and err.sqlstate == "42P01" then
        log.debug(name .. ": the registry is not migrated yet")
        return
    end
    log.warn(name .. what, { error = errors.describe(err) })
end

-- Runs fn unless it ran less than interval seconds ago; logs its failure.
local function every(name, interval, now, fn)
    if interval <= 0 or now - last[name] < interval then return end
    last[name] = now
    guarded(name, " failed; trying again later", fn)
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

-- every() for a chore that runs once per cluster: fn runs only while this
-- worker holds the chore's lease; otherwise_fn (if any) runs when it does not.
local function every_once(name, interval, now, fn, otherwise_fn)
    every(name, interval, now, function()
        if not chores.run_if_held(name, interval, fn) and otherwise_fn then otherwise_fn() end
    end)
end

local function clear_stall()
    metrics.set("steeple_broadcast_stall_seconds", nil, 0)
end

-- The database work of stop(): within the second the core gives it, so a
-- registry that does not answer is a warning, not a task cut short.
local STOP_DB_MS <const> = 700

function M.stop()
    if config.db.url == nil then return end
    db.deadline(STOP_DB_MS)
    guarded("chores", ": leases not given back; they end by themselves", chores.give_back)
end

function M.tick()
    local now = steeple.clock()
    -- summed over the workers by /metrics
    metrics.set("steeple_lua_heap_bytes", nil, math.floor(collectgarbage("count") * 1024))
    every("replay", config.spool.replay_interval_s, now, replay)
    if config.db.url == nil then return end
    every("broadcasts", config.messaging.dispatch_interval_s, now, dispatch.tick)
    every_once("outbound_sweep", config.telnyx.sweep_interval_s, now, outbound.sweep)
    every_once("broadcast_stall", config.messaging.dispatch_interval_s, now, dispatch.report_stall, clear_stall)
    every_once("janitor", config.tenants.janitor_interval_s, now, registration.sweep)
end

return M
