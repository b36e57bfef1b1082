-- The broadcast dispatcher: every worker, once a tick, takes the churches
-- whose mark in the registry's broadcast_tenants is due (never two workers
-- the same church at once: taking one moves its due_at a lease ahead) and
-- gives each a turn of at most TURN_S seconds:
--
--   1. recipients whose lease ran out go back to pending, or, when their
--      call had begun (calling), are failed as an outcome never known
--      (logged, steeple_broadcast_unknown_total): nobody is called twice;
--   2. due scheduled broadcasts start: the audience is fixed in the
--      transaction that moves them to sending (one row per phone number of
--      the lists' opted-in members, with its time zone);
--   3. recipients inside quiet hours wait for their window to open;
--   4. senders (their number bounded by telnyx.max_in_flight per worker,
--      shared by the turns under way) each claim one due recipient (FOR
--      UPDATE SKIP LOCKED, a lease), take the church's and the platform's
--      slots (pace.lua), record the call as begun together with the
--      conversation message it sends, call Telnyx and record the outcome;
--   5. finished broadcasts become done, and the church's mark moves to the
--      time it has work again, or goes when nothing is scheduled or sending;
--      its progress_due_at moves with it unless the turn's senders failed
--      without a call (a turn that fails or never comes leaves it behind).
--
-- A turn ends after TURN_S; the church's next turn (here or on another
-- worker or node) comes once its mark is due again, so a long broadcast
-- holds no other church back.
--
--   dispatch.tick()  (every worker, from housekeeping)
--   dispatch.report_stall()  sets steeple_broadcast_stall_seconds: how long
--       the active church most overdue has waited for a turn that makes
--       progress (worker 0, from housekeeping; 0 when none waits)

local config = require "steeple.config"
local log = require "steeple.log"
local metrics = require "steeple.metrics"
local steeple = require "steeple"
local db = require "db"
local errors = require "errors"
local json = require "json"
local tenants = require "tenants"
local merge = require "broadcasts.merge"
local pace = require "broadcasts.pace"
local store = require "broadcasts.store"
local area_codes = require "broadcasts.area_codes"
local outbound = require "messaging.outbound"
local consent = require "messaging.consent"

local ipairs, pcall, max, min, floor = ipairs, pcall, math.max, math.min, math.floor

local M = {}

metrics.describe("steeple_broadcast_sends_total", "counter", "Broadcast calls to Telnyx, by outcome.")
metrics.describe("steeple_broadcast_unknown_total", "counter",
    "Broadcast calls cut short whose outcome is unknown (failed, never sent again).")
metrics.describe("steeple_broadcast_stall_seconds", "gauge",
    "Seconds the active church most overdue has waited for a broadcast turn that makes progress (0: none).")

local TURN_S <const> = 3            -- one church's turn
local TURN_LEASE_S <const> = 30     -- a church taken is not taken again before
local HORIZON_S <const> = 1         -- the furthest slot a sender waits for
local CHURCHES_PER_TICK <const> = 16
local CLAIM_LEASE_S <const> = 60    -- a claimed recipient, on top of the call's timeout

local codec = json.new(8)
local senders = 0 -- this worker's senders under way

-- The area-code table as a JSON object for the audience statement.
local ZONES = codec.encode(area_codes)

local function lease_s()
    return CLAIM_LEASE_S + config.telnyx.timeout_ms / 1000
end

-- 1. ------------------------------------------------------------------------
local function expire_leases(handle, tenant_id)
    local rows = handle:query([[
        UPDATE broadcast_recipients SET
            state = CASE WHEN calling THEN 'failed' ELSE 'pending' END,
            calling = false, lease_until = NULL
        WHERE state = 'sending' AND lease_until < now()
        RETURNING broadcast_id, phone_number, state]])
    for _, r in ipairs(rows) do
        if r.state == "failed" then
            log.warn("a broadcast call was cut short and its outcome is unknown; it is failed and not sent again",
                { tenant = tenant_id, broadcast = r.broadcast_id })
            metrics.inc("steeple_broadcast_unknown_total")
        end
    end
end

-- 2. ------------------------------------------------------------------------
local START <const> = [[
    UPDATE broadcasts SET status = 'sending', started_at = now(), updated_at = now()
    WHERE id = (SELECT id FROM broadcasts
                WHERE (status = 'scheduled' OR status = 'sending' AND started_at IS NULL) AND send_at <= now()
                ORDER BY send_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id]]

-- $1 broadcast, $2 the church's time zone, $3 the area codes' zones (a
-- JSON object).
local AUDIENCE <const> = [[
    WITH zones AS (SELECT key AS code, value AS zone FROM jsonb_each_text($3::jsonb)),
    audience AS (
        INSERT INTO broadcast_recipients (broadcast_id, phone_number, contact_id, time_zone)
        SELECT DISTINCT ON (c.phone_number) $1::uuid, c.phone_number, c.id, coalesce(z.zone, $2)
        FROM broadcasts b
        JOIN list_members m ON m.list_id = ANY (b.list_ids)
        JOIN contacts c ON c.id = m.contact_id
        LEFT JOIN zones z ON c.phone_number LIKE '+1%' AND z.code = substr(c.phone_number, 3, 3)
        WHERE b.id = $1 AND c.consent = 'opted_in' AND c.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_number = c.phone_number)
        ORDER BY c.phone_number
        RETURNING 1)
    UPDATE broadcasts SET recipients = n.n, queued = n.n
    FROM (SELECT count(*)::int AS n FROM audience) n WHERE id = $1]]

local function start_due(handle, church)
    for _ = 1, 10 do
        local started = db.transaction(handle, function(tx)
            local b = tx:query(START)[1]
            if b == nil then return false end
            tx:query(AUDIENCE, b.id, church.time_zone or "America/New_York", ZONES)
            return true
        end)
        if not started then return end
    end
end

-- 3. ------------------------------------------------------------------------
-- $1 quiet_start, $2 quiet_end ("HH:MM"). A recipient in its quiet hours
-- waits until quiet_end, local time.
local QUIET <const> = [[
    WITH q AS (SELECT $1::time AS s, $2::time AS e),
    r AS (
        SELECT r.broadcast_id, r.phone_number, (now() AT TIME ZONE r.time_zone) AS local, r.time_zone
        FROM broadcast_recipients r JOIN broadcasts b ON b.id = r.broadcast_id
        WHERE b.status = 'sending' AND r.state = 'pending' AND r.not_before <= now())
    UPDATE broadcast_recipients x SET not_before =
        ((r.local::date + q.e) + CASE WHEN r.local::time >= q.e THEN interval '1 day' ELSE interval '0' END)
            AT TIME ZONE r.time_zone
    FROM r, q
    WHERE x.broadcast_id = r.broadcast_id AND x.phone_number = r.phone_number AND q.s <> q.e
      AND CASE WHEN q.s < q.e THEN r.local::time >= q.s AND r.local::time < q.e
               ELSE r.local::time >= q.s OR r.local::time < q.e END]]

local function defer_quiet(handle)
    handle:query(QUIET, config.messaging.quiet_start, config.messaging.quiet_end)
end

-- 4. ------------------------------------------------------------------------
-- The oldest sending broadcast's first due recipient: each broadcast's
-- recipients are read in not_before order from broadcast_recipients_due
-- (the broadcasts in started_at order, until one has a recipient free), so
-- a claim never sorts a broadcast's whole audience.
local CLAIM <const> = [[
    WITH r AS (
        SELECT d.broadcast_id, d.phone_number
        FROM (SELECT id FROM broadcasts WHERE status = 'sending' ORDER BY started_at) b
        CROSS JOIN LATERAL (
            SELECT r.broadcast_id, r.phone_number FROM broadcast_recipients r
            WHERE r.broadcast_id = b.id AND r.state = 'pending' AND r.not_before <= now()
            ORDER BY r.not_before LIMIT 1 FOR UPDATE SKIP LOCKED) d
        LIMIT 1)
    UPDATE broadcast_recipients x SET state = 'sending', lease_until = now() + make_interval(secs => $1)
    FROM r WHERE x.broadcast_id = r.broadcast_id AND x.phone_number = r.phone_number
    RETURNING x.broadcast_id, x.phone_number]]

local RELEASE <const> = [[
    UPDATE broadcast_recipients SET state = 'pending', lease_until = NULL,
        not_before = now() + make_interval(secs => $3)
    WHERE broadcast_id = $1 AND phone_number = $2 AND state = 'sending']]

-- The recipient, its broadcast and contact, locked for the call's record.
local LOOK <const> = [[
    SELECT r.state, r.attempts, r.message_id, r.contact_id, b.status, b.text, b.media,
           c.first_name, c.last_name,
           (c.consent <> 'opted_in' OR c.deleted_at IS NOT NULL
            OR EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_number = r.phone_number)) AS opted_out
    FROM broadcast_recipients r JOIN broadcasts b ON b.id = r.broadcast_id
    JOIN contacts c ON c.id = r.contact_id
    WHERE r.broadcast_id = $1 AND r.phone_number = $2 FOR UPDATE OF r]]

local SET_STATE <const> = [[
    UPDATE broadcast_recipients SET state = $3, lease_until = NULL, calling = false
    WHERE broadcast_id = $1 AND phone_number = $2]]

-- The conversation message of a first call ($1 contact, $2 from, $3 to,
-- $4 text, $5 media).
local NEW_MESSAGE <const> = [[
    WITH conv AS (
        INSERT INTO conversations (contact_id) VALUES ($1)
        ON CONFLICT (contact_id) DO UPDATE SET contact_id = EXCLUDED.contact_id
        RETURNING id)
    INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                          send_attempts)
    SELECT conv.id, 'outbound', $2, $3, $4, $5::jsonb, 'sending', 1 FROM conv
    RETURNING id]]

local BEGIN_CALL <const> = [[
    UPDATE broadcast_recipients SET attempts = attempts + 1, calling = true, message_id = $3,
        lease_until = now() + make_interval(secs => $4)
    WHERE broadcast_id = $1 AND phone_number = $2]]

local function value(v)
    if v == db.null then return nil end
    return v
end

-- Records the call as begun; returns the message to send, or nil when the
-- recipient is not to be called (paused, cancelled, opted out, lease lost).
local function begin_call(handle, church, r)
    return db.transaction(handle, function(tx)
        local cur = tx:query(LOOK, r.broadcast_id, r.phone_number)[1]
        if cur == nil or cur.state ~= "sending" then return nil end
        if cur.status ~= "sending" then
            local state = cur.status == "cancelled" and "cancelled" or "pending"
            tx:query(SET_STATE, r.broadcast_id, r.phone_number, state)
            return nil
        end
        if cur.opted_out then
            tx:query(SET_STATE, r.broadcast_id, r.phone_number, "opted_out")
            return nil
        end
        local text = merge.render(merge.parse(cur.text),
            { firstName = value(cur.first_name), lastName = value(cur.last_name), churchName = church.name })
        local message_id = cur.message_id
        if message_id == db.null then
            message_id = tx:query(NEW_MESSAGE, cur.contact_id, church.phone, r.phone_number, text,
                codec.encode(cur.media))[1].id
        else
            tx:query("UPDATE messages SET send_attempts = send_attempts + 1, updated_at = now() WHERE id = $1",
                message_id)
        end
        tx:query(BEGIN_CALL, r.broadcast_id, r.phone_number, message_id, lease_s())
        return { id = message_id, attempts = cur.attempts + 1, from_number = church.phone,
                 to_number = r.phone_number, text = text, media = cur.media }
    end)
end

-- $1 message, $2 its status, $3 provider id, $4 the recipient's state
local FINISH <const> = [[
    WITH m AS (
        UPDATE messages SET status = $2, provider_message_id = coalesce($3, provider_message_id),
            updated_at = now()
        WHERE id = $1 RETURNING id)
    UPDATE broadcast_recipients SET state = $4, calling = false, lease_until = NULL
    WHERE message_id = $1 AND state = 'sending']]

-- $1 message, $2 seconds to wait, $3 1 when the call does not count as an
-- attempt (a 429: Telnyx refused it before sending anything), else 0
local AGAIN <const> = [[
    UPDATE broadcast_recipients SET state = 'pending', calling = false, lease_until = NULL,
        attempts = attempts - $3,
        not_before = now() + make_interval(secs => $2)
    WHERE message_id = $1 AND state = 'sending']]

local function record(handle, sql, ...)
    outbound.persist(handle.query, handle, sql, ...)
end

-- Calls Telnyx for msg and records the outcome.
local function call(handle, church, msg)
    local outcome, detail, wait = outbound.call(msg)
    metrics.inc("steeple_broadcast_sends_total", { outcome = outcome })
    if outcome == "sent" then
        local ok, err = pcall(record, handle, FINISH, msg.id, "sent", detail, "sent")
        if not ok then
            log.error("Telnyx accepted a broadcast message that could not be recorded; it is not sent again",
                { message = msg.id, provider_id = detail, error = errors.describe(err) })
        end
    elseif outcome == "throttled" then
        pace.slow_down(church.tenant_id, wait)
        record(handle, AGAIN, msg.id, wait, 1)
    elseif outcome == "retry" and msg.attempts < config.telnyx.send_attempts then
        log.info("broadcast message will be tried again", { message = msg.id, reason = detail })
        record(handle, AGAIN, msg.id, outbound.backoff_s(msg.attempts), 0)
    else
        log.warn("broadcast message failed", { message = msg.id, reason = detail, attempts = msg.attempts })
        record(handle, FINISH, msg.id, "failed", db.null, "failed")
        if outcome == "opted_out" then outbound.persist(consent.carrier_opt_out, handle, msg.to_number) end
    end
end

-- One send: claimed recipient r, the church's slot taken. Returns true when
-- Telnyx was called.
local function send_one(handle, church, r)
    local wait = pace.platform()
    if wait > 0 then steeple.sleep(wait * 1000) end
    local msg = begin_call(handle, church, r)
    if msg == nil then return false end
    call(handle, church, msg)
    return true
end

-- A sender: claims and sends until the turn's end, or nothing is due, or
-- the church's slots are further away, counting its calls in t.calls;
-- returns when to look again (seconds from now) or nil when nothing was due.
local function sender(handle, church, deadline, t)
    while steeple.clock() < deadline do
        local r = handle:query(CLAIM, lease_s())[1]
        if r == nil then return nil end
        local wait, later = pace.church(church.tenant_id, HORIZON_S)
        if wait == nil then
            handle:query(RELEASE, r.broadcast_id, r.phone_number, 0)
            return later
        end
        if wait > 0 then steeple.sleep(wait * 1000) end
        if send_one(handle, church, r) then t.calls = t.calls + 1 end
    end
    return 0
end

-- 5. ------------------------------------------------------------------------
local NEXT <const> = [[
    SELECT extract(epoch FROM least(
        (SELECT min(send_at) FROM broadcasts WHERE status = 'scheduled' OR status = 'sending' AND started_at IS NULL),
        (SELECT min(r.not_before) FROM broadcast_recipients r JOIN broadcasts b ON b.id = r.broadcast_id
         WHERE b.status = 'sending' AND r.state = 'pending'),
        (SELECT min(lease_until) FROM broadcast_recipients WHERE state = 'sending')) - now())::float8 AS next]]

-- $1 church, $2 seconds to its next turn, $3 true when this turn made progress
local NEXT_TURN <const> = [[
    UPDATE broadcast_tenants SET due_at = now() + make_interval(secs => $2),
        progress_due_at = CASE WHEN $3 THEN now() + make_interval(secs => $2) ELSE progress_due_at END
    WHERE tenant_id = $1]]

local function finish_turn(handle, church, later, progressed)
    handle:query([[
        UPDATE broadcasts SET status = 'done', finished_at = now(), updated_at = now()
        WHERE status = 'sending' AND started_at IS NOT NULL AND queued = 0]])
    if store.unmark_if_idle(handle, church.tenant_id) then return end
    local next = handle:query(NEXT)[1].next
    if next == db.null then next = 60 end -- paused ones only: resume marks it again
    next = max(next, later or 0, 0)
    db.registry():query(NEXT_TURN, church.tenant_id, next, progressed)
end

local function turn(church, share)
    local handle = db.pool(church.server, church.dbname)
    expire_leases(handle, church.tenant_id)
    start_due(handle, church)
    defer_quiet(handle)
    local deadline = steeple.clock() + TURN_S
    local t = { running = share, calls = 0, failed = 0 }
    local later = nil
    for _ = 1, share do
        senders = senders + 1
        steeple.spawn(function()
            local ok, result = pcall(sender, handle, church, deadline, t)
            senders = senders - 1
            t.running = t.running - 1
            if not ok then
                t.failed = t.failed + 1
                log.warn("a broadcast sender stopped", { tenant = church.tenant_id, error = errors.describe(result) })
            elseif result ~= nil then
                later = later and min(later, result) or result
            end
        end)
    end
    while t.running > 0 do steeple.sleep(20) end
    finish_turn(handle, church, later, t.failed == 0 or t.calls > 0)
end

local TAKE_CHURCHES <const> = [[
    WITH due AS (
        SELECT tenant_id FROM broadcast_tenants WHERE due_at <= now()
        ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED),
    taken AS (
        UPDATE broadcast_tenants b SET due_at = now() + make_interval(secs => $2)
        FROM due WHERE b.tenant_id = due.tenant_id RETURNING b.tenant_id)
    SELECT taken.tenant_id FROM taken]]

function M.tick()
    local free = config.telnyx.max_in_flight - senders
    if free <= 0 then return end
    local due = db.registry():query(TAKE_CHURCHES, min(free, CHURCHES_PER_TICK), TURN_LEASE_S)
    if #due == 0 then return end
    local share = max(1, floor(free / #due))
    for _, d in ipairs(due) do
        steeple.spawn(function()
            local ok, err = pcall(function()
                local entry = tenants.lookup(d.tenant_id)
                if entry == nil or entry.status ~= "active" or entry.phone == db.null then return end
                turn({ tenant_id = d.tenant_id, server = entry.server, dbname = entry.dbname, name = entry.name,
                       phone = entry.phone, time_zone = entry.time_zone }, share)
            end)
            if not ok then
                log.warn("a broadcast turn failed; the church is tried again later",
                    { tenant = d.tenant_id, error = errors.describe(err) })
            end
        end)
    end
end

-- Churches that are not active send nothing and are not waited for.
local STALL <const> = [[
    SELECT floor(greatest(extract(epoch FROM now() - min(b.progress_due_at)), 0))::int AS stall
    FROM broadcast_tenants b JOIN tenants t ON t.id = b.tenant_id
    WHERE t.status = 'active' AND t.phone_number IS NOT NULL]]

function M.report_stall()
    local stall = db.registry():query(STALL)[1].stall
    metrics.set("steeple_broadcast_stall_seconds", nil, stall == db.null and 0 or stall)
end

return M
