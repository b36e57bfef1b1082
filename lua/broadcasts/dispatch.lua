-- The broadcast dispatcher. Every worker runs lanes, each with a share of
-- recipients it may hold at once: LANE_SHARE (at most telnyx.max_in_flight),
-- twice as many lanes as fill telnyx.max_in_flight, so that one lane's calls
-- are under way while another writes to its church's database; the
-- worker's calls in flight stay within telnyx.max_in_flight (a call waits
-- for its turn at the worker's gate). When churches are paced, the lanes
-- split telnyx.max_in_flight in shares of PACED_SHARE instead (more churches
-- at once, each slower). A lane takes one church whose mark in the registry's
-- broadcast_tenants is due after another (never two lanes, workers or nodes
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
--   4. due recipients are sent to in batches of at most the lane's share
--      (claimed with FOR UPDATE SKIP LOCKED and a lease, the church's and
--      the platform's slots taken (pace.lua), the calls recorded as begun
--      together with the conversation messages they send, each call its own
--      task, the outcomes recorded together);
--   5. finished broadcasts become done, and the church's mark moves to the
--      time it has work again, or goes when nothing is scheduled or sending;
--      its progress_due_at moves with it unless the turn failed without a
--      call (a turn that fails or never comes leaves it behind).
--
-- A turn ends after TURN_S; the church's next turn (here or on another
-- worker or node) comes once its mark is due again, behind the churches
-- due before it, so a long broadcast holds no other church back.
--
--   dispatch.tick()  (every worker, from housekeeping) starts the lanes
--                    that are not running
--   dispatch.report_stall()  sets steeple_broadcast_stall_seconds: how long
--       the active church most overdue has waited for a turn that makes
--       progress (worker 0, from housekeeping; 0 when none waits)

local config = require "steeple.config"
local log = require "steeple.log"
local metrics = require "steeple.metrics"
local steeple = require "steeple"
local latch = require "steeple.latch"
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

local ipairs, pcall, error, remove = ipairs, pcall, error, table.remove
local max, min, floor, ceil = math.max, math.min, math.floor, math.ceil

local M = {}

metrics.describe("steeple_broadcast_sends_total", "counter", "Broadcast calls to Telnyx, by outcome.")
metrics.describe("steeple_broadcast_unknown_total", "counter",
    "Broadcast calls cut short whose outcome is unknown (failed, never sent again).")
metrics.describe("steeple_broadcast_stall_seconds", "gauge",
    "Seconds the active church most overdue has waited for a broadcast turn that makes progress (0: none).")

local TURN_S <const> = 3            -- one church's turn
local TURN_LEASE_S <const> = 30     -- a church taken is not taken again before
local HORIZON_S <const> = 1         -- the furthest slot a call waits for
local LANE_SHARE <const> = 16       -- recipients one church's turn holds, at most
local PACED_SHARE <const> = 2       -- the same when churches are paced (rate or daily cap)
local GATE_POLL_MS <const> = 100    -- a call waiting at the gate looks again after
local CLAIM_LEASE_S <const> = 60    -- a claimed recipient, on top of the call's timeout

local codec = json.new(8)
local lanes = 0           -- this worker's lanes under way
local in_flight = 0       -- this worker's calls under way
local gate_queue = {}     -- latches of the calls waiting for one to end
local stopping = false    -- the worker is stopping: no task can start

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
-- A turn's sends go in batches: one statement claims as many due recipients
-- as the turn's share has room for (skipping, there, whoever opted out after
-- the audience was fixed), the church's slots are taken for them (pace.lua;
-- those without one are given back), one statement records their calls as
-- begun together with the conversation messages they send, and each call
-- runs as a task of its own. Outcomes gather while calls are under way and
-- are recorded by one statement before the next claim. A recipient counts
-- against the share from its claim to its outcome's record, so a turn never
-- holds more recipients than its share.

-- The oldest sending broadcasts' first due recipients, $2 at most, leased
-- for $1 s: each broadcast's recipients are read in not_before order from
-- broadcast_recipients_due (the broadcasts in started_at order, until $2 are
-- found), so a claim never sorts a broadcast's whole audience.
local CLAIM <const> = [[
    WITH r AS (
        SELECT d.broadcast_id, d.phone_number
        FROM (SELECT id FROM broadcasts WHERE status = 'sending' ORDER BY started_at) b
        CROSS JOIN LATERAL (
            SELECT r.broadcast_id, r.phone_number FROM broadcast_recipients r
            WHERE r.broadcast_id = b.id AND r.state = 'pending' AND r.not_before <= now()
            ORDER BY r.not_before LIMIT $2 FOR UPDATE SKIP LOCKED) d
        LIMIT $2)
    UPDATE broadcast_recipients x SET
        state = CASE WHEN c.consent <> 'opted_in' OR c.deleted_at IS NOT NULL
                          OR EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_number = x.phone_number)
                     THEN 'opted_out' ELSE 'sending' END,
        lease_until = now() + make_interval(secs => $1)
    FROM r, broadcasts b, contacts c
    WHERE x.broadcast_id = r.broadcast_id AND x.phone_number = r.phone_number
      AND b.id = x.broadcast_id AND c.id = x.contact_id
    RETURNING x.broadcast_id, x.phone_number, x.state, b.text, b.media, c.first_name, c.last_name]]

-- Gives claimed recipients back ($1: a JSON array of { broadcast_id,
-- phone_number }), due again after $2 s.
local RELEASE <const> = [[
    UPDATE broadcast_recipients x SET state = 'pending', lease_until = NULL,
        not_before = now() + make_interval(secs => $2)
    FROM jsonb_to_recordset($1::jsonb) AS r(broadcast_id uuid, phone_number text)
    WHERE x.broadcast_id = r.broadcast_id AND x.phone_number = r.phone_number AND x.state = 'sending']]

-- Records the calls of claimed recipients as begun ($1: a JSON array of {
-- broadcast_id, phone_number, text }; $2 the church's number, $3 the
-- lease): each gets its conversation message, made on its first call and
-- counted again on the next ones. Recipients whose broadcast was paused or
-- cancelled meanwhile go back to pending, or are cancelled. Returns the
-- recipients begun.
local BEGIN_CALLS <const> = [[
    WITH i AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS i(broadcast_id uuid, phone_number text, text text)),
    live AS MATERIALIZED (
        SELECT i.broadcast_id, i.phone_number, i.text, r.contact_id, b.media, r.message_id IS NULL AS fresh,
               coalesce(r.message_id, gen_random_uuid()) AS message_id
        FROM i JOIN broadcast_recipients r USING (broadcast_id, phone_number)
        JOIN broadcasts b ON b.id = i.broadcast_id
        WHERE r.state = 'sending' AND b.status = 'sending'),
    stopped AS (
        UPDATE broadcast_recipients x SET lease_until = NULL,
            state = CASE WHEN b.status = 'cancelled' THEN 'cancelled' ELSE 'pending' END
        FROM i, broadcasts b
        WHERE x.broadcast_id = i.broadcast_id AND x.phone_number = i.phone_number
          AND b.id = i.broadcast_id AND x.state = 'sending' AND b.status <> 'sending'),
    conv AS (
        INSERT INTO conversations (contact_id) SELECT DISTINCT contact_id FROM live WHERE fresh
        ON CONFLICT (contact_id) DO UPDATE SET contact_id = EXCLUDED.contact_id
        RETURNING id, contact_id),
    made AS (
        INSERT INTO messages (id, conversation_id, direction, from_number, to_number, text, media, status,
                              send_attempts)
        SELECT l.message_id, conv.id, 'outbound', $2, l.phone_number, l.text, l.media, 'sending', 1
        FROM live l JOIN conv USING (contact_id) WHERE l.fresh),
    again AS (
        UPDATE messages SET send_attempts = send_attempts + 1, updated_at = now()
        WHERE id IN (SELECT message_id FROM live WHERE NOT fresh))
    UPDATE broadcast_recipients x SET attempts = x.attempts + 1, calling = true, message_id = l.message_id,
        lease_until = now() + make_interval(secs => $3)
    FROM live l WHERE x.broadcast_id = l.broadcast_id AND x.phone_number = l.phone_number
    RETURNING x.broadcast_id, x.phone_number, x.message_id, x.attempts, l.text, l.media]]

-- Records outcomes ($1: a JSON array of { message_id, outcome, provider_id,
-- wait, discount }): sent and failed are final; again is pending once more,
-- due after wait seconds, its attempt given back when discount is 1 (a 429:
-- Telnyx refused the call before sending anything).
local RECORD <const> = [[
    WITH o AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb)
            AS o(message_id uuid, outcome text, provider_id text, wait float8, discount int)),
    m AS (
        UPDATE messages SET status = o.outcome, updated_at = now(),
            provider_message_id = coalesce(o.provider_id, provider_message_id)
        FROM o WHERE messages.id = o.message_id AND o.outcome <> 'again')
    UPDATE broadcast_recipients x SET
        state = CASE WHEN o.outcome = 'again' THEN 'pending' ELSE o.outcome END,
        calling = false, lease_until = NULL, attempts = x.attempts - o.discount,
        not_before = CASE WHEN o.outcome = 'again' THEN now() + make_interval(secs => o.wait)
                          ELSE x.not_before END
    FROM o WHERE x.message_id = o.message_id AND x.state = 'sending']]

local function value(v)
    if v == db.null then return nil end
    return v
end

-- Writes the outcomes gathered so far, as one statement.
local function flush(run)
    local list = run.outcomes
    if #list == 0 then return end
    run.outcomes = {}
    local ok, err = pcall(outbound.persist, run.handle.query, run.handle, RECORD, codec.encode(list))
    if ok then return end
    for _, o in ipairs(list) do
        if o.outcome == "sent" then
            log.error("Telnyx accepted a broadcast message that could not be recorded; it is not sent again",
                { message = o.message_id, provider_id = o.provider_id, error = errors.describe(err) })
        end
    end
    error(err, 0)
end

-- The outcome to record for a call to msg.
local function outcome_of(run, msg, outcome, detail, wait)
    run.calls = run.calls + 1
    metrics.inc("steeple_broadcast_sends_total", { outcome = outcome })
    local o = { message_id = msg.id, wait = 0, discount = 0 }
    if outcome == "sent" then
        o.outcome, o.provider_id = "sent", detail
    elseif outcome == "throttled" then
        pace.slow_down(run.church.tenant_id, wait)
        o.outcome, o.wait, o.discount = "again", wait, 1
    elseif outcome == "retry" and msg.attempts < config.telnyx.send_attempts then
        log.info("broadcast message will be tried again", { message = msg.id, reason = detail })
        o.outcome, o.wait = "again", outbound.backoff_s(msg.attempts)
    else
        log.warn("broadcast message failed", { message = msg.id, reason = detail, attempts = msg.attempts })
        o.outcome = "failed"
        if outcome == "opted_out" then outbound.persist(consent.carrier_opt_out, run.handle, msg.to_number) end
    end
    return o
end

-- The worker's gate: at most telnyx.max_in_flight calls at once over all
-- its lanes. A call that finds it full waits for one to end (or looks again
-- after GATE_POLL_MS, should its wake-up have gone to a waiter that left).
local function enter_gate()
    while in_flight >= config.telnyx.max_in_flight do
        local l = latch.new()
        gate_queue[#gate_queue + 1] = l
        if not l:wait(GATE_POLL_MS) then
            for i, q in ipairs(gate_queue) do
                if q == l then remove(gate_queue, i) break end
            end
        end
    end
    in_flight = in_flight + 1
end

local function leave_gate()
    in_flight = in_flight - 1
    local l = remove(gate_queue, 1)
    if l then l:set() end
end

local settle

-- The outcome of a call never made: the recipient pending again after wait
-- seconds, its attempt not counted.
local function given_back(message_id, wait)
    return { message_id = message_id, outcome = "again", wait = wait, discount = 1 }
end

-- One begun call, after its church slot's wait and the platform's; its
-- outcome joins the turn's. A failure before the call (the platform's slot
-- could not be taken) gives the recipient back, not counted as an attempt.
local function call(run, msg, wait)
    local ok, o = pcall(function()
        if wait > 0 then steeple.sleep(wait * 1000) end
        local platform = pace.platform()
        if platform > 0 then steeple.sleep(platform * 1000) end
    end)
    if ok then
        enter_gate()
        ok, o = pcall(function() return outcome_of(run, msg, outbound.call(msg)) end)
        leave_gate()
        if not ok then
            log.warn("a broadcast call stopped before its outcome was recorded; it fails once its lease ends",
                { message = msg.id, error = errors.describe(o) })
        end
    else
        log.warn("a broadcast sender stopped before its call; the recipient is given back",
            { message = msg.id, error = errors.describe(o) })
        run.failed = true
        ok, o = true, given_back(msg.id, 1)
    end
    run.held = run.held - 1
    if ok then run.outcomes[#run.outcomes + 1] = o end
    settle(run)
end

-- Takes the church's slots for the claimed recipients, in order, and gives
-- back those that got none: the turn claims again once a slot may be free,
-- or ends when that is past its end. Returns the waits of those that got one.
local function take_slots(run, claimed)
    local waits = {}
    for i = 1, #claimed do
        local wait, later = pace.church(run.church.tenant_id, HORIZON_S)
        if wait == nil then
            local rest = {}
            for k = i, #claimed do
                rest[#rest + 1] = { broadcast_id = claimed[k].broadcast_id, phone_number = claimed[k].phone_number }
            end
            run.handle:query(RELEASE, codec.encode(rest), 0)
            if steeple.clock() + later < run.deadline then
                run.resume_at = steeple.clock() + later
            else
                run.later, run.stopped = later, true
            end
            break
        end
        waits[i] = wait
    end
    return waits
end

-- Claims what the turn's share has room for, records the calls as begun
-- and starts them. Only one refill of a turn runs at a time (settle), so the
-- recipients it claims and the calls under way never exceed the share.
local function refill(run)
    local church = run.church
    local rows = run.handle:query(CLAIM, lease_s(), run.share - run.held)
    if #rows == 0 then
        run.stopped, run.idle = true, true
        return
    end
    local claimed = {}
    for _, r in ipairs(rows) do
        if r.state == "sending" then claimed[#claimed + 1] = r end
    end
    local waits = take_slots(run, claimed)
    if #waits == 0 then return end
    local batch, wait_of, templates = {}, {}, {}
    for i, wait in ipairs(waits) do
        local r = claimed[i]
        local template = templates[r.text] or merge.parse(r.text) -- once per broadcast of the batch
        templates[r.text] = template
        batch[i] = { broadcast_id = r.broadcast_id, phone_number = r.phone_number,
                     text = merge.render(template, { firstName = value(r.first_name),
                         lastName = value(r.last_name), churchName = church.name }) }
        wait_of[r.broadcast_id .. r.phone_number] = wait
    end
    local begun = run.handle:query(BEGIN_CALLS, codec.encode(batch), church.phone, lease_s())
    for _, b in ipairs(begun) do
        local msg = { id = b.message_id, attempts = b.attempts, from_number = church.phone,
                      to_number = b.phone_number, text = b.text, media = b.media }
        if steeple.spawn(call, run, msg, wait_of[b.broadcast_id .. b.phone_number]) then
            run.held = run.held + 1
        else -- stopping: the call is given back, not counted as an attempt
            stopping, run.stopped = true, true
            run.outcomes[#run.outcomes + 1] = given_back(msg.id, 0)
        end
    end
end

-- Records the outcomes in and claims again while the turn lasts and its
-- share has room; one task at a time does it for a turn (the others' outcomes
-- wait for its next round). A batch is claimed once half the share is free,
-- so that a claim serves several calls.
function settle(run)
    if run.busy then return end
    run.busy = true
    local ok, err = pcall(function()
        repeat
            flush(run)
            local free = run.share - run.held
            local now = steeple.clock()
            if not run.stopped and now < run.deadline and now >= run.resume_at
                and (run.held == 0 or free * 2 >= run.share) then
                refill(run)
            end
        until #run.outcomes == 0
    end)
    run.busy = false
    if not ok then
        run.stopped, run.failed = true, true
        log.warn("a broadcast sender stopped", { tenant = run.church.tenant_id, error = errors.describe(err) })
    end
end

-- Sends until the turn's end, or nothing is due, or the church's slots are
-- further away; returns when to look again (seconds from now), or nil when
-- nothing was due, and whether the turn made progress (it did not fail, or
-- it called Telnyx).
local function send(handle, church, share)
    local run = { handle = handle, church = church, share = share, held = 0, outcomes = {},
                  deadline = steeple.clock() + TURN_S, resume_at = 0, busy = false, stopped = false,
                  calls = 0, failed = false }
    settle(run)
    while true do
        local now = steeple.clock()
        if run.held == 0 and not run.busy then
            if run.stopped or now >= run.deadline then break end
            -- no call under way to start the next claim: the church's slot is due
            if now >= run.resume_at then settle(run) end
        end
        steeple.sleep(20)
    end
    -- outcomes that came in while a refill was under way, after its last round
    settle(run)
    local progressed = not run.failed or run.calls > 0
    if run.later then return run.later, progressed end
    if run.idle then return nil, progressed end
    return 0, progressed
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
    finish_turn(handle, church, send(handle, church, share))
end

local TAKE_CHURCH <const> = [[
    WITH due AS (
        SELECT tenant_id FROM broadcast_tenants WHERE due_at <= now()
        ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    UPDATE broadcast_tenants b SET due_at = now() + make_interval(secs => $1)
    FROM due WHERE b.tenant_id = due.tenant_id RETURNING b.tenant_id]]

-- A lane gives one due church after another its turn, until none is due,
-- or a reload replaced the scripts it runs (the new ones' lanes take over).
local function lane(share)
    while not stopping and steeple.current() do
        local due = db.registry():query(TAKE_CHURCH, TURN_LEASE_S)[1]
        if due == nil then return end
        local ok, err = pcall(function()
            local entry = tenants.lookup(due.tenant_id)
            if entry == nil or entry.status ~= "active" or entry.phone == db.null then return end
            turn({ tenant_id = due.tenant_id, server = entry.server, dbname = entry.dbname, name = entry.name,
                   phone = entry.phone, time_zone = entry.time_zone }, share)
        end)
        if not ok then
            log.warn("a broadcast turn failed; the church is tried again later",
                { tenant = due.tenant_id, error = errors.describe(err) })
        end
    end
end

-- A paced church sends no faster than its slots come, whatever its share: a
-- small share lets a worker's lanes serve more churches at once. Unpaced,
-- a share as large as the gate allows makes each statement serve more
-- recipients, and the second lane of each share keeps the gate busy.
function M.tick()
    local total = config.telnyx.max_in_flight
    local paced = config.messaging.rate_per_min > 0 or config.messaging.daily_cap > 0
    local count, share -- share: every lane's, or nil to split total evenly
    if paced then
        count = ceil(total / PACED_SHARE)
    else
        share = min(LANE_SHARE, total)
        count = 2 * ceil(total / share)
    end
    while lanes < count and not stopping do
        lanes = lanes + 1
        local lane_share = share or floor(total / count) + (lanes <= total % count and 1 or 0)
        steeple.spawn(function()
            local ok, err = pcall(lane, lane_share)
            lanes = lanes - 1
            if not ok then log.warn("broadcast dispatch stopped; it starts again on the next tick",
                { error = errors.describe(err) }) end
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
