-- The Telnyx webhook: signature, then the event applied at once, or spooled
-- when the databases cannot take it now.
--
--   webhook.verify(req)   raises invalid_signature unless the request carries a
--                         valid Ed25519 signature of "{timestamp}|{raw body}"
--                         by telnyx.public_key, within telnyx.tolerance_s
--   webhook.handle(req)   -> the response table; the event is spooled when the
--                         databases are down or slower than spool.after_ms
--   webhook.replay(max)   applies up to max spooled events in order; returns
--                         how many were applied, and whether it stopped
--                         because the databases are still down

local config = require "steeple.config"
local crypto = require "steeple.crypto"
local steeple = require "steeple"
local log = require "steeple.log"
local metrics = require "steeple.metrics"
local errors = require "errors"
local db = require "db"
local events = require "messaging.events"
local spool = require "steeple.spool"

local tonumber, pcall, error, abs, ipairs = tonumber, pcall, error, math.abs, ipairs
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

-- One spooled event: applied, or kept as a dead letter when it can never
-- apply (it is not dropped); raises only what is worth trying again.
local function apply_record(data)
    local parsed, ev = pcall(events.parse, data)
    if not parsed then return events.dead_letter({ type = "unknown" }, "spooled event does not parse", data) end
    local ok, result = pcall(events.apply, ev, data)
    if ok or events.retryable(result) then
        if not ok then error(result, 0) end
        return result
    end
    log.error("a spooled webhook cannot be applied; kept as a dead letter", { error = describe(result) })
    return events.dead_letter(ev, "failed to apply: " .. describe(result), data)
end

function M.replay(max)
    local applied = 0
    for _, rec in ipairs(spool.peek(max)) do
        local ok, err = pcall(apply_record, rec.data)
        if not ok then
            if not events.retryable(err) then
                log.warn("spool replay stopped", { error = describe(err) })
            end
            return applied, true
        end
        spool.done(rec.id)
        applied = applied + 1
    end
    return applied, false
end

return M
