-- Outbound messages: stored as queued first, then sent through the Telnyx
-- API (POST {telnyx.api_base}/v2/messages) by a background task. A 2xx
-- records the provider's id and status sent; a 4xx fails the message at once;
-- a 5xx, a timeout or a connection error is tried again with back-off, up to
-- telnyx.send_attempts, then fails.
--
--   outbound.queue(session, conversation, input, church) -> the message row (status queued);
--       input = { text, media = { { url } } }, church = { phone, server, dbname }
--   outbound.deliver(server, dbname, id)  sends one message until it is sent or failed
--   outbound.sweep()  (worker 0, from housekeeping) starts deliveries of queued
--                     messages whose time has come: after a restart, or a lost task
--
-- A send is claimed in the database before each try (next_attempt_at moves a
-- lease ahead), so two tasks never send one message at once; a process killed
-- mid-send leaves the message queued, and it is sent again after the lease.

local config = require "steeple.config"
local http = require "steeple.http"
local log = require "steeple.log"
local steeple = require "steeple"
local db = require "db"
local errors = require "errors"
local json = require "json"
local conversations = require "messaging.conversations"

local ipairs, type, pcall, min = ipairs, type, pcall, math.min

local M = {}

local LEASE_S <const> = 60
local BACKOFF_MAX_S <const> = 60

local codec = json.new(8)

-- Claims the message for one try; returns its row, or nil when it is not
-- queued or another task holds it.
local function claim(handle, id)
    return handle:query([[
        UPDATE messages SET send_attempts = send_attempts + 1,
            next_attempt_at = now() + make_interval(secs => $2)
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

local function finish(handle, id, status, provider_id)
    handle:query([[
        UPDATE messages SET status = $2, provider_message_id = coalesce($3, provider_message_id),
            next_attempt_at = NULL, updated_at = now()
        WHERE id = $1 AND status = 'queued']], id, status, provider_id or db.null)
end

local function backoff(handle, id, attempts)
    local wait = min(2 ^ (attempts - 1), BACKOFF_MAX_S)
    handle:query("UPDATE messages SET next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
        id, wait)
    return wait
end

function M.deliver(server, dbname, id)
    local handle = db.pool(server, dbname)
    while true do
        local msg = claim(handle, id)
        if msg == nil then return end
        local outcome, detail = call_api(msg)
        if outcome == "sent" then
            finish(handle, id, "sent", detail)
            return
        end
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
        if not ok then log.warn("outbound delivery stopped; the sweep retries it", { error = errors.describe(err) }) end
    end)
end

function M.queue(session, conversation, input, church)
    local row = session.db:query([[
        INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                              next_attempt_at)
        VALUES ($1, 'outbound', $2, $3, $4, $5::jsonb, 'queued', now())
        RETURNING ]] .. conversations.message_columns(),
        conversation.id, church.phone, conversation.contact_phone, input.text, codec.encode(input.media))[1]
    db.registry():query([[
        INSERT INTO outbox_tenants (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING]], session.tenant_id)
    start(church.server, church.dbname, row.id)
    return row
end

function M.sweep()
    local tenants = db.registry():query([[
        SELECT o.tenant_id, t.db_server, t.db_name FROM outbox_tenants o
        JOIN tenants t ON t.id = o.tenant_id WHERE t.status <> 'provisioning' LIMIT 100]])
    for _, t in ipairs(tenants) do
        local handle = db.pool(t.db_server, t.db_name)
        local due = handle:query([[
            SELECT id FROM messages WHERE status = 'queued' AND next_attempt_at <= now()
            ORDER BY next_attempt_at LIMIT 50]])
        for _, m in ipairs(due) do start(t.db_server, t.db_name, m.id) end
        local left = handle:query("SELECT count(*) AS n FROM messages WHERE status = 'queued'")[1].n
        if left == 0 then
            db.registry():query("DELETE FROM outbox_tenants WHERE tenant_id = $1", t.tenant_id)
        end
    end
end

return M
