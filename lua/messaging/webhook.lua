-- The Telnyx webhook: signature, then the event applied at once, or spooled
-- when the databases cannot take it now.
--
--   webhook.verify(req)   raises invalid_signature unless the request carries a
--                         valid Ed25519 signature of "{timestamp}|{raw body}"
--                         by telnyx.public_key, within telnyx.tolerance_s
--   webhook.handle(req)   -> the response table; the event is spooled when the
--                         databases are down or slower than spool.after_ms
--   webhook.pass()        a new replay pass over the spool, from its oldest record:
--                         { over, stopped, applied, waiting }
--   webhook.replay(pass, max)  looks at up to max more records of the pass;
--                         returns how many it applied (or dead-lettered),
--                         also counted in steeple_spool_replayed_total.
--                         pass.over once the pass has seen every record or
--                         stopped; pass.stopped when the registry cannot be
--                         reached; pass.waiting counts records left for later
--
-- Replay makes progress church by church. A pass goes over the spool oldest
-- first. An event whose church cannot take it now (its database or server is
-- down, or it is still being registered) holds back that church's later
-- events for the rest of the pass, so that each church's events are applied
-- in the order they came, and the pass goes on with the other churches. A
-- church that failed is not tried again before a back-off, doubling from
-- spool.replay_interval_s up to WAIT_MAX_S. When its database no longer
-- exists (its server answers and has no such database), its events go to the
-- dead letters once spool.give_up_s has passed since this worker first found
-- it missing (the clock starts again after a restart, and when the database
-- is back). A server that stays down keeps its churches' events spooled,
-- blocking no one. Only a registry that cannot be reached (it routes every
-- number not cached and keeps the dead letters) stops a pass. An event is
-- marked done only after it committed, in any order (core/spool.c keeps the
-- marks across restarts), and applying is idempotent: nothing is applied
-- twice, nothing acknowledged is lost.

local config = require "steeple.config"
local crypto = require "steeple.crypto"
local steeple = require "steeple"
local log = require "steeple.log"
local metrics = require "steeple.metrics"
local errors = require "errors"
local db = require "db"
local events = require "messaging.events"
local numbers = require "messaging.numbers"
local spool = require "steeple.spool"

local tonumber, pcall, error, abs, ipairs, min, max = tonumber, pcall, error, math.abs, ipairs, math.min, math.max
local find = string.find

-- Every outcome steeple_webhooks_total counts, here and in messaging.events.
local OUTCOMES <const> = { "stored", "duplicate", "updated", "ignored", "unroutable",
    "invalid_signature", "spooled", "spool_failed" }
local describe = errors.describe

local M = {}

do
    local sets = {}
    for i, result in ipairs(OUTCOMES) do sets[i] = { result = result } end
    metrics.describe("steeple_webhooks_total", "counter", "Telnyx webhooks received, by outcome.", sets)
end
metrics.describe("steeple_spool_replayed_total", "counter",
    "Spooled webhooks the replay took out of the spool: applied, or kept as dead letters.")

local public_key
if config.telnyx.public_key then public_key = crypto.base64_decode(config.telnyx.public_key) end

local function refuse(reason)
    log.info("webhook refused", { reason = reason })
    metrics.inc("steeple_webhooks_total", { result = "invalid_signature" })
    errors.raise("invalid_signature")
end

function M.verify(req)
    if public_key == nil then
        log.error("telnyx.public_key (TELNYX_PUBLIC_KEY) is not set: every webhook is refused")
        refuse("no public key")
    end
    local sig64, ts = req.headers["telnyx-signature-ed25519"], req.headers["telnyx-timestamp"]
    if sig64 == nil or ts == nil then refuse("signature or timestamp missing") end
    if #ts > 12 or not find(ts, "^%d+$") then refuse("malformed timestamp") end
    if abs(steeple.now() - tonumber(ts)) > config.telnyx.tolerance_s then refuse("timestamp out of tolerance") end
    local sig = crypto.base64_decode(sig64)
    if sig == nil or not crypto.ed25519_verify(public_key, sig, ts .. "|" .. req.body) then
        refuse("bad signature")
    end
end

-- Appends the verified body to the spool; 202 once it is on disk.
local function spool_it(req, why)
    local ok, err = spool.append(req.body)
    if not ok then
        log.error("webhook could not be spooled", { reason = why, error = err })
        metrics.inc("steeple_webhooks_total", { result = "spool_failed" })
        errors.raise("service_unavailable", { headers = { ["Retry-After"] = 1 } })
    end
    log.warn("webhook spooled: the databases cannot take it now", { reason = why })
    metrics.inc("steeple_webhooks_total", { result = "spooled" })
    return { status = 202, json = { status = "spooled" } }
end

local ANSWER <const> = { stored = 200, duplicate = 200, updated = 200, ignored = 200, unroutable = 202 }

function M.handle(req)
    M.verify(req)
    local ev = events.parse(req.body)
    -- Telnyx waits about 2 s: a database slower than spool.after_ms is down
    db.deadline(config.spool.after_ms)
    local ok, result = pcall(events.apply, ev, req.body)
    db.deadline(nil)
    if not ok then
        if events.retryable(result) then return spool_it(req, describe(result)) end
        error(result, 0)
    end
    return { status = ANSWER[result], json = { status = result } }
end

-- Replay ----------------------------------------------------------------------

local WAIT_MAX_S <const> = 10

-- Churches whose events wait, by tenant id: { retry_at, backoff,
-- missing_since } (steeple.clock() seconds). Per worker, in memory.
local waiting = {}

function M.pass()
    if spool.pending() == 0 then waiting = {} end -- nothing waits any more
    return { from = 0, held = {}, doomed = {}, over = false, stopped = false, applied = 0, waiting = 0 }
end

-- Whether the church's database is gone: true when its server answers and
-- has no such database, false when it has it, nil when the server cannot say.
local function database_missing(church)
    local ok, rows = pcall(function()
        return db.maintenance(church.server):query("SELECT 1 AS found FROM pg_database WHERE datname = $1",
            church.dbname)
    end)
    if not ok then return nil end
    return rows[1] == nil
end

-- After a failure of the church: its back-off and whether it has been
-- missing for spool.give_up_s (then true: give its events up).
local function church_failed(church, why)
    local now, w = steeple.clock(), waiting[church.id]
    if w == nil then
        w = { backoff = config.spool.replay_interval_s }
        waiting[church.id] = w
        log.warn("spooled webhooks of a church wait: its database cannot take them now",
            { tenant = church.id, error = describe(why) })
    else
        w.backoff = min(w.backoff * 2, max(WAIT_MAX_S, config.spool.replay_interval_s))
    end
    w.retry_at = now + w.backoff
    if why == events.NOT_YET then return false end
    local missing = database_missing(church)
    if missing == false then w.missing_since = nil end
    if missing then w.missing_since = w.missing_since or now end
    return w.missing_since ~= nil and now - w.missing_since >= config.spool.give_up_s
end

-- Keeps the record as a dead letter and marks it done.
local function bury(pass, rec, ev, reason)
    events.dead_letter(ev, reason, rec.data)
    spool.done(rec.id)
    pass.applied = pass.applied + 1
end

local function hold(pass, key)
    pass.held[key] = true
    pass.waiting = pass.waiting + 1
end

local function applied(pass, rec, key)
    if key then waiting[key] = nil end
    spool.done(rec.id)
    pass.applied = pass.applied + 1
end

-- One event of a church that failed: held, or (its database gone for
-- spool.give_up_s) dead-lettered, with the rest of its events in this pass.
local function church_down(pass, rec, ev, church, why)
    numbers.forget(ev.church_number) -- the next look-up asks the registry again
    if not church_failed(church, why) then return hold(pass, church.id) end
    log.error("a spooled webhook's church database no longer exists; kept as a dead letter",
        { tenant = church.id, give_up_s = config.spool.give_up_s })
    pass.doomed[church.id] = true
    bury(pass, rec, ev, "the church's database no longer exists")
end

-- One spooled event, applied, held back or kept as a dead letter when it
-- can never apply (it is never dropped). Raises what the registry could not
-- take (the pass stops there).
local function replay_record(pass, rec)
    local parsed, ev = pcall(events.parse, rec.data)
    if not parsed then return bury(pass, rec, { type = "unknown" }, "spooled event does not parse") end
    local routed, church = pcall(events.church, ev)
    if not routed then
        if events.retryable(church) then error(church, 0) end
        log.error("a spooled webhook cannot be routed; kept as a dead letter", { error = describe(church) })
        return bury(pass, rec, ev, "failed to apply: " .. describe(church))
    end
    local key = church and church.id
    if key and pass.held[key] then return hold(pass, key) end
    if key and pass.doomed[key] then return bury(pass, rec, ev, "the church's database no longer exists") end
    local w = key and waiting[key]
    if w and steeple.clock() < w.retry_at then return hold(pass, key) end
    local ok, result = pcall(events.apply_to, church, ev, rec.data)
    if ok then return applied(pass, rec, key) end
    if not events.retryable(result) then
        log.error("a spooled webhook cannot be applied; kept as a dead letter", { error = describe(result) })
        return bury(pass, rec, ev, "failed to apply: " .. describe(result))
    end
    if church == nil then error(result, 0) end -- the dead letter could not be written: the registry
    church_down(pass, rec, ev, church, result)
end

function M.replay(pass, max_records)
    local recs, err = spool.peek(max_records, pass.from)
    if recs == nil then
        log.error("the spool cannot be read", { error = err })
        pass.over, pass.stopped = true, true
        return 0
    end
    local before = pass.applied
    for _, rec in ipairs(recs) do
        local ok, why = pcall(replay_record, pass, rec)
        if not ok then
            if not events.retryable(why) then log.warn("spool replay stopped", { error = describe(why) }) end
            pass.over, pass.stopped = true, true
            pass.waiting = pass.waiting + 1
            break
        end
        pass.from = rec.id + 1
    end
    if #recs == 0 then pass.over = true end
    metrics.inc("steeple_spool_replayed_total", nil, pass.applied - before)
    return pass.applied - before
end

return M
