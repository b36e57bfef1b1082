-- Outbound messages: stored as queued first, then sent through the Telnyx
-- API (POST {telnyx.api_base}/v2/messages) by a background task. A 2xx
-- records the provider's id and status sent; a 4xx fails the message at once;
-- a 5xx, a timeout or a connection error is tried again with back-off, up to
-- telnyx.send_attempts, then fails.
--
--   outbound.queue(session, conversation, input, church) -> the message row (status queued);
--       input = { text, media = { { url } } }, church = { phone, server, dbname };
--       raises (nothing queued, nothing sent) when the church's database or
--       the registry cannot take it
--   outbound.deliver(server, dbname, id)  sends one message until it is sent or failed
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
-- A send is claimed in the database before each try: the message moves to
-- sending, with next_attempt_at as the try's deadline (a lease), so two tasks
-- never send one message at once. A message is never sent twice: only the
-- try's own task moves it back to queued (after a 5xx, a timeout or a
-- connection error), and the provider's acceptance is recorded with retries.
-- A try whose outcome was never recorded (the process stopped mid-send, or the
-- database refused the record for good) stays sending: once its lease is
-- over the sweep reports it (a warning, steeple_outbound_unknown_total) and
-- clears next_attempt_at; it is not sent again.

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

local ipairs, type, pcall, error, min = ipairs, type, pcall, error, math.min

local M = {}

local LEASE_S <const> = 60
local BACKOFF_MAX_S <const> = 60
-- the church's outbox lock (pg_advisory_xact_lock keys are per database)
local OUTBOX_LOCK <const> = 0x5374506c4f7574 -- "StPlOut"
-- recording an outcome: tries 0.2, 0.4 … 3.2 s apart (about 6 s in all)
local RECORD_TRIES <const> = 6
local RECORD_WAIT_MS <const> = 200

local codec = json.new(8)

-- Claims the message for one try; returns its row, or nil when it is not
-- queued or another task holds it.
local function claim(handle, id)
    return handle:query([[
        UPDATE messages SET status = 'sending', send_attempts = send_attempts + 1,
            next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
        WHERE id = $1 AND status = 'queued' AND next_attempt_at <= now()
        RETURNING send_attempts, from_number, to_number, text, media]], id, LEASE_S)[1]
end

local function media_urls(media)
    local urls = {}
    for i, m in ipairs(type(media) == "table" and media or {}) do urls[i] = m.url end
    return urls
end

-- One call to the API: "sent", provider id | "rejected", why | "retry", why.
local function call_api(msg)
    local body = { from = msg.from_number, to = msg.to_number, text = msg.text }
    local urls = media_urls(msg.media)
    if #urls > 0 then body.media_urls = urls end
    local status, text = http.request {
        method = "POST", url = config.telnyx.api_base .. "/v2/messages",
        headers = { ["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer " .. (config.telnyx.api_key or "") },
        body = codec.encode(body),
        timeout_ms = config.telnyx.timeout_ms, connect_timeout_ms = config.telnyx.timeout_ms,
    }
    if status == nil then return "retry", text end
    if status >= 200 and status < 300 then
        local ok, answer = pcall(codec.decode_object, text)
        local id = ok and type(answer) == "table" and type(answer.data) == "table" and answer.data.id
        if type(id) ~= "string" then return "retry", "a 2xx answer without data.id" end
        return "sent", id
    end
    if status >= 400 and status < 500 then return "rejected", "HTTP " .. status end
    return "retry", "HTTP " .. status
end

-- Writes the outcome of a try (one statement), trying again while the
-- database fails transiently; raises the last error.
local function record(handle, sql, ...)
    local wait = RECORD_WAIT_MS
    for try = 1, RECORD_TRIES do
        local ok, err = pcall(handle.query, handle, sql, ...)
        if ok then return end
        if try == RECORD_TRIES or not db.is_transient(err) then error(err, 0) end
        steeple.sleep(wait)
        wait = wait * 2
    end
end

local FINISH <const> = [[
    UPDATE messages SET status = $2, provider_message_id = coalesce($3, provider_message_id),
        next_attempt_at = NULL, updated_at = now()
    WHERE id = $1 AND status = 'sending']]

local function finish(handle, id, status, provider_id)
    record(handle, FINISH, id, status, provider_id or db.null)
end

-- Back to queued, due after the back-off; returns the wait in seconds.
local function backoff(handle, id, attempts)
    local wait = min(2 ^ (attempts - 1), BACKOFF_MAX_S)
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

function M.deliver(server, dbname, id)
    local handle = db.pool(server, dbname)
    while true do
        local msg = claim(handle, id)
        if msg == nil then return end
        local outcome, detail = call_api(msg)
        if outcome == "sent" then return accepted(handle, id, detail) end
        if outcome == "rejected" or msg.send_attempts >= config.telnyx.send_attempts then
            log.warn("outbound message failed", { message = id, reason = detail, attempts = msg.send_attempts })
            finish(handle, id, "failed")
            return
        end
        log.info("outbound message will be tried again", { message = id, reason = detail })
        steeple.sleep(backoff(handle, id, msg.send_attempts) * 1000)
    end
end

-- Starts deliver() as a background task; its failures are logged.
local function start(server, dbname, id)
    steeple.spawn(function()
        local ok, err = pcall(M.deliver, server, dbname, id)
        if not ok then
            log.warn("outbound delivery stopped; the sweep sends the message if it is still queued",
                { error = errors.describe(err) })
        end
    end)
end

local INSERT_QUEUED <const> = [[
    INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                          next_attempt_at)
    VALUES ($1, 'outbound', $2, $3, $4, $5::jsonb, 'queued', now())
    RETURNING ]]

-- The mark first, then the message, in one transaction of the church's
-- database holding its outbox lock (shared): see the top of this file.
function M.queue(session, conversation, input, church)
    local row = db.transaction(session.db, function(tx)
        tx:query("SELECT 1 AS locked FROM pg_advisory_xact_lock_shared($1)", OUTBOX_LOCK)
        tenants.mark_outbox(db.registry(), session.tenant_id)
        return tx:query(INSERT_QUEUED .. conversations.message_columns(), conversation.id, church.phone,
            conversation.contact_phone, input.text, codec.encode(input.media))[1]
    end)
    start(church.server, church.dbname, row.id)
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
    for _, m in ipairs(due) do start(t.db_server, t.db_name, m.id) end
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
