-- Outbound messages: stored as queued first, then sent through the Telnyx
-- API (POST {telnyx.api_base}/v2/messages) by a background task. A 2xx
-- records the provider's id and status sent; a 4xx fails the message at once;
-- a 429, a 5xx, a timeout or a connection error is tried again with back-off
-- (after a 429 at least the pause it asks for), up to telnyx.send_attempts,
-- then fails.
--
--   outbound.queue(session, conversation, input, church) -> the message row (status queued);
--       input = { text, media = { { url } } }, church = { phone, server, dbname };
--       raises (nothing queued, nothing sent) when the church's database or
--       the registry cannot take it
--   outbound.enqueue(tx, tenant_id, msg) -> the row of msg queued on the caller's
--       transaction of the church's database; msg = { conversation_id, from, to,
--       text, media (a JSON array), exempt (sent even to an opted-out number) };
--       once the transaction committed, outbound.start sends it
--   outbound.start(server, dbname, id)  starts deliver() as a background task
--   outbound.deliver(server, dbname, id)  sends one message until it is sent or failed
--   outbound.call(msg) -> the outcome of one call to the API (see call_api)
--   outbound.persist(fn, ...) runs fn, tried again while the database fails transiently
--   outbound.backoff_s(attempts, at_least) -> the wait before the next try
--   outbound.sweep()  (worker 0, from housekeeping) starts deliveries of queued
--                     messages whose time has come: after a restart, or a lost
--                     task; reports attempts cut short
--
-- The registry's outbox_tenants marks the churches that may have messages to
-- send, so that the sweep visits no other church. Two rules keep every queued
-- message under a mark:
--   * queue() writes the mark before the message, both while it holds the
--     church's outbox lock (a transaction-scoped advisory lock, shared): a
--     failed mark leaves nothing queued (the client's retry is the only send);
--   * the sweep removes a mark only while it holds that lock exclusively
--     (it never waits for it) and has counted nothing left to send. A queue()
--     either committed its message before the sweep counted, or writes its
--     mark after the sweep removed the old one.
--
-- Nothing is sent to a number that opted out (suppressed, or its contact
-- opted_out), but for the messages queued exempt (the STOP confirmation, the
-- HELP answer): the claim finds it and fails the message instead. A send that
-- Telnyx refuses with error 40300 (the number blocked the sender) fails, and
-- the number is marked opted out by the carrier (messaging/consent.lua).
--
-- A send is claimed in the database before each try: the message moves to
-- sending, with next_attempt_at as the try's deadline (a lease), so two tasks
-- never send one message at once. A message is never sent twice: only the
-- try's own task moves it back to queued (after a 5xx, a timeout or a
-- connection error), and the provider's acceptance is recorded with retries.
-- A try whose outcome was never recorded (the process stopped mid-send, or the
-- database refused the record for good) stays sending: once its lease is
-- over the sweep reports it (a warning, steeple_outbound_unknown_total) and
-- clears next_attempt_at; it is not sent again. Each call to the API is
-- counted in steeple_outbound_sends_total{outcome} (call_api's outcomes).

local config = require "steeple.config"
local http = require "steeple.http"
local log = require "steeple.log"
local metrics = require "steeple.metrics"
local steeple = require "steeple"
local db = require "db"
local errors = require "errors"
local json = require "json"
local tenants = require "tenants"
local conversations = require "messaging.conversations"
local consent = require "messaging.consent"

local ipairs, type, pcall, error, tonumber = ipairs, type, pcall, error, tonumber
local min, max = math.min, math.max

local M = {}

metrics.describe("steeple_outbound_sends_total", "counter", "Conversation message calls to Telnyx, by outcome.")
metrics.describe("steeple_outbound_unknown_total", "counter",
    "Conversation message calls cut short whose outcome is unknown (left sending, never sent again).")

local LEASE_S <const> = 60
local BACKOFF_MAX_S <const> = 60
-- the church's outbox lock (pg_advisory_xact_lock keys are per database)
local OUTBOX_LOCK <const> = 0x5374506c4f7574 -- "StPlOut"
-- recording an outcome: tries 0.2, 0.4 … 3.2 s apart (about 6 s in all)
local RECORD_TRIES <const> = 6
local RECORD_WAIT_MS <const> = 200

local codec = json.new(8)

-- Claims the message for one try; returns its row, or nil when it is not
-- queued or another task holds it. A message to a number that opted out
-- (unless exempt) is failed instead: its row comes back with blocked true.
local CLAIM <const> = [[
    WITH b AS (
        SELECT m.id, NOT m.opt_out_exempt AND (
                EXISTS (SELECT 1 FROM suppressions s WHERE s.phone_number = m.to_number)
                OR EXISTS (SELECT 1 FROM contacts k WHERE k.phone_number = m.to_number AND k.consent = 'opted_out'))
            AS blocked
        FROM messages m WHERE m.id = $1)
    UPDATE messages SET
        status = CASE WHEN b.blocked THEN 'failed' ELSE 'sending' END,
        send_attempts = send_attempts + CASE WHEN b.blocked THEN 0 ELSE 1 END,
        next_attempt_at = CASE WHEN b.blocked THEN NULL ELSE now() + make_interval(secs => $2) END,
        updated_at = now()
    FROM b
    WHERE messages.id = b.id AND messages.status = 'queued' AND messages.next_attempt_at <= now()
    RETURNING b.blocked, messages.send_attempts, messages.from_number, messages.to_number, messages.text,
        messages.media]]

local function claim(handle, id)
    return handle:query(CLAIM, id, LEASE_S)[1]
end

local function media_urls(media)
    local urls = {}
    for i, m in ipairs(type(media) == "table" and media or {}) do urls[i] = m.url end
    return urls
end

-- True when an error answer of the API carries the code 40300: the number
-- blocked the sender (it texted STOP to the carrier).
local function carrier_blocked(text)
    local ok, answer = pcall(codec.decode_object, text or "")
    local list = ok and type(answer) == "table" and answer.errors
    if type(list) ~= "table" then return false end
    for _, e in ipairs(list) do
        if type(e) == "table" and (e.code == "40300" or e.code == 40300) then return true end
    end
    return false
end

-- The pause a 429 answer asks for, in seconds: its Retry-After (seconds),
-- else x-ratelimit-reset (seconds from now, or a Unix time), else 1.
local function throttle_wait(headers)
    local after = tonumber(headers["retry-after"] or "")
    if after and after >= 0 then return min(after, BACKOFF_MAX_S) end
    local reset = tonumber(headers["x-ratelimit-reset"] or "")
    if reset and reset > 1e9 then reset = reset - steeple.now() end
    if reset and reset >= 0 then return min(reset, BACKOFF_MAX_S) end
    return 1
end

-- One call to the API, msg = { from_number, to_number, text, media }:
-- "sent", provider id | "rejected", why | "opted_out", why | "retry", why
-- | "throttled", why, seconds to wait (429).
local function call_api(msg)
    local body = { from = msg.from_number, to = msg.to_number, text = msg.text }
    local urls = media_urls(msg.media)
    if #urls > 0 then body.media_urls = urls end
    local status, text, headers = http.request {
        method = "POST", url = config.telnyx.api_base .. "/v2/messages",
        headers = { ["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer " .. (config.telnyx.api_key or "") },
        body = codec.encode(body),
        timeout_ms = config.telnyx.timeout_ms, connect_timeout_ms = config.telnyx.timeout_ms,
    }
    if status == nil then return "retry", text end
    if status == 429 then return "throttled", "HTTP 429", throttle_wait(headers) end
    if status >= 200 and status < 300 then
        local ok, answer = pcall(codec.decode_object, text)
        local id = ok and type(answer) == "table" and type(answer.data) == "table" and answer.data.id
        if type(id) ~= "string" then return "retry", "a 2xx answer without data.id" end
        return "sent", id
    end
    if status >= 400 and status < 500 then
        if carrier_blocked(text) then return "opted_out", "HTTP " .. status .. ", code 40300" end
        return "rejected", "HTTP " .. status
    end
    return "retry", "HTTP " .. status
end

-- Runs fn(...), trying again while the database fails transiently; raises
-- the last error.
local function persist(fn, ...)
    local wait = RECORD_WAIT_MS
    for try = 1, RECORD_TRIES do
        local ok, err = pcall(fn, ...)
        if ok then return end
        if try == RECORD_TRIES or not db.is_transient(err) then error(err, 0) end
        steeple.sleep(wait)
        wait = wait * 2
    end
end

-- Writes the outcome of a try (one statement), as persist.
local function record(handle, sql, ...)
    persist(handle.query, handle, sql, ...)
end

local FINISH <const> = [[
    UPDATE messages SET status = $2, provider_message_id = coalesce($3, provider_message_id),
        next_attempt_at = NULL, updated_at = now()
    WHERE id = $1 AND status = 'sending']]

local function finish(handle, id, status, provider_id)
    record(handle, FINISH, id, status, provider_id or db.null)
end

-- The back-off before try attempts + 1, at least at_least seconds.
local function backoff_s(attempts, at_least)
    return max(min(2 ^ (attempts - 1), BACKOFF_MAX_S), at_least or 0)
end

-- Back to queued, due after the back-off; returns the wait in seconds.
local function backoff(handle, id, attempts, at_least)
    local wait = backoff_s(attempts, at_least)
    record(handle, [[
        UPDATE messages SET status = 'queued', next_attempt_at = now() + make_interval(secs => $2),
            updated_at = now()
        WHERE id = $1 AND status = 'sending']], id, wait)
    return wait
end

-- The provider took the message: recorded, or (the database refused every
-- try) left sending with its provider id in the log.
local function accepted(handle, id, provider_id)
    local ok, err = pcall(finish, handle, id, "sent", provider_id)
    if ok then return end
    log.error("Telnyx accepted an outbound message that could not be recorded; it stays sending "
        .. "and is not sent again", { message = id, provider_id = provider_id, error = errors.describe(err) })
end

-- Telnyx refused the send with 40300: the message fails and its number is
-- opted out by the carrier.
local function carrier_refused(handle, id, msg)
    log.warn("outbound message refused: the number blocked the church (40300); it is opted out",
        { message = id })
    finish(handle, id, "failed")
    persist(consent.carrier_opt_out, handle, msg.to_number)
end

function M.deliver(server, dbname, id)
    local handle = db.pool(server, dbname)
    while true do
        local msg = claim(handle, id)
        if msg == nil then return end
        if msg.blocked then
            log.info("outbound message failed unsent: its number opted out", { message = id })
            return
        end
        local outcome, detail, wait = call_api(msg)
        metrics.inc("steeple_outbound_sends_total", { outcome = outcome })
        if outcome == "sent" then return accepted(handle, id, detail) end
        if outcome == "opted_out" then return carrier_refused(handle, id, msg) end
        if outcome == "rejected" or msg.send_attempts >= config.telnyx.send_attempts then
            log.warn("outbound message failed", { message = id, reason = detail, attempts = msg.send_attempts })
            finish(handle, id, "failed")
            return
        end
        log.info("outbound message will be tried again", { message = id, reason = detail })
        steeple.sleep(backoff(handle, id, msg.send_attempts, wait) * 1000)
    end
end

-- Starts deliver() as a background task; its failures are logged.
M.call = call_api
M.persist = persist
M.backoff_s = backoff_s

function M.start(server, dbname, id)
    steeple.spawn(function()
        local ok, err = pcall(M.deliver, server, dbname, id)
        if not ok then
            log.warn("outbound delivery stopped; the sweep sends the message if it is still queued",
                { error = errors.describe(err) })
        end
    end)
end

local MESSAGE_COLUMNS <const> = conversations.message_columns()
local INSERT_QUEUED <const> = [[
    INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                          next_attempt_at, opt_out_exempt)
    VALUES ($1, 'outbound', $2, $3, $4, $5::jsonb, 'queued', now(), $6)
    RETURNING ]] .. MESSAGE_COLUMNS

-- The mark first, then the message, in the transaction holding the church's
-- outbox lock (shared): see the top of this file.
function M.enqueue(tx, tenant_id, msg)
    tx:query("SELECT 1 AS locked FROM pg_advisory_xact_lock_shared($1)", OUTBOX_LOCK)
    tenants.mark_outbox(db.registry(), tenant_id)
    return tx:query(INSERT_QUEUED, msg.conversation_id, msg.from, msg.to, msg.text, codec.encode(msg.media),
        msg.exempt == true)[1]
end

function M.queue(session, conversation, input, church)
    local row = db.transaction(session.db, function(tx)
        return M.enqueue(tx, session.tenant_id, { conversation_id = conversation.id, from = church.phone,
            to = conversation.contact_phone, text = input.text, media = input.media })
    end)
    M.start(church.server, church.dbname, row.id)
    return row
end

-- Tries whose lease ran out with no outcome recorded: reported once each.
local function report_unknown(handle, tenant_id)
    local rows = handle:query([[
        UPDATE messages SET next_attempt_at = NULL, updated_at = now()
        WHERE status = 'sending' AND next_attempt_at <= now()
        RETURNING id, send_attempts]])
    for _, m in ipairs(rows) do
        log.warn("an outbound send was cut short and its outcome is unknown; it stays sending and is "
            .. "not sent again", { tenant = tenant_id, message = m.id, attempts = m.send_attempts })
        metrics.inc("steeple_outbound_unknown_total")
    end
end

-- Removes the church's mark when nothing is left to send: only under the
-- exclusive outbox lock, taken without waiting (a queue() under way keeps it).
local function unmark_if_idle(handle, tenant_id)
    db.transaction(handle, function(tx)
        if not tx:query("SELECT pg_try_advisory_xact_lock($1) AS locked", OUTBOX_LOCK)[1].locked then return end
        local busy = tx:query([[
            SELECT EXISTS (SELECT 1 FROM messages WHERE status = 'queued')
                OR EXISTS (SELECT 1 FROM messages WHERE status = 'sending' AND next_attempt_at IS NOT NULL)
                AS busy]])[1].busy
        if not busy then tenants.unmark_outbox(db.registry(), tenant_id) end
    end)
end

local function sweep_church(t)
    local handle = db.pool(t.db_server, t.db_name)
    report_unknown(handle, t.tenant_id)
    local due = handle:query([[
        SELECT id FROM messages WHERE status = 'queued' AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT 50]])
    for _, m in ipairs(due) do M.start(t.db_server, t.db_name, m.id) end
    unmark_if_idle(handle, t.tenant_id)
end

function M.sweep()
    for _, t in ipairs(tenants.outbox_marked(db.registry())) do
        local ok, err = pcall(sweep_church, t)
        if not ok then
            log.warn("outbound sweep of a church failed; tried again later",
                { tenant = t.tenant_id, error = errors.describe(err) })
        end
    end
end

return M
