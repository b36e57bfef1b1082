-- Telnyx v2 events: checking their shape and applying them to the right
-- church's database. The same apply() serves a live webhook and a spooled
-- one being replayed; it is idempotent (the provider's ids decide), so an
-- event applied twice is stored once.
--
--   events.parse(body)  -> event, or raises invalid_json / validation_failed
--   events.apply(event, body) -> "stored" | "duplicate" | "updated" | "ignored" | "unroutable";
--       raises when the registry or the church's database cannot take it
--       now: a database error, or events.NOT_YET for a church still being
--       registered (the caller spools it)
--   events.church(event) -> the registry entry { id, status, server, dbname }
--       of the church the event is for, or nil (no church has its number, or
--       it needs none); raises a database error when the registry cannot say
--   events.apply_to(church, event, body) -> as apply, for the entry that
--       events.church gave: the registry is not asked again (replay tells
--       the registry's failures from the church's by this split)
--   events.retryable(e) -> true for those errors
--   events.dead_letter(event, reason, body) keeps an event for operators

local config = require "steeple.config"
local db = require "db"
local errors = require "errors"
local group = require "group"
local json = require "json"
local metrics = require "steeple.metrics"
local numbers = require "messaging.numbers"
local consent = require "messaging.consent"
local outbound = require "messaging.outbound"

local type, ipairs, error, pcall = type, ipairs, error, pcall
local find, sub = string.find, string.sub
local tointeger = math.tointeger
local utf8_len = utf8.len

local M = {}

metrics.describe("steeple_webhook_batches_total", "counter",
    "Writes of received texts and of delivery statuses: alone, together (several in one statement), "
        .. "one_by_one (a batch refused).",
    { { written = "alone" }, { written = "together" }, { written = "one_by_one" } })

-- Limits of one event: Telnyx sends at most 10 media per MMS and texts far
-- shorter than these.
local MAX_TEXT <const> = 10000
local MAX_MEDIA <const> = 10
local MAX_URL <const> = 2048
local MAX_ID <const> = 200

local codec = json.new(16)
local NULL <const> = json.null

local STATUS_EVENTS <const> = { ["message.sent"] = true, ["message.delivered"] = true, ["message.finalized"] = true }
local OUTBOUND_STATUSES <const> = {
    queued = true, sending = true, sent = true, delivered = true, sending_failed = true,
    delivery_failed = true, delivery_unconfirmed = true,
}

local function invalid(field, message)
    errors.raise("validation_failed", { fields = { [field] = message } })
end

local function is_phone(s)
    return type(s) == "string" and find(s, "^%+%d%d%d%d%d%d%d%d%d?%d?%d?%d?%d?%d?%d?$") ~= nil
end

local function text_of(v, field, max)
    if v == nil or v == NULL then return "" end
    if type(v) ~= "string" then invalid(field, "must be a string of valid UTF-8") end
    local too_long = "must be at most " .. max .. " characters"
    if #v > 4 * max then invalid(field, too_long) end -- 4 bytes a character at most
    local n = utf8_len(v)
    if n == nil then invalid(field, "must be a string of valid UTF-8") end
    if n > max then invalid(field, too_long) end
    return v
end

local function check_media(list)
    if list == nil or list == NULL then return {} end
    if type(list) ~= "table" then invalid("data.payload.media", "must be an array") end
    if #list > MAX_MEDIA then invalid("data.payload.media", "must hold at most " .. MAX_MEDIA .. " items") end
    local out = {}
    for i, m in ipairs(list) do
        if type(m) ~= "table" or type(m.url) ~= "string" or #m.url > MAX_URL or not find(m.url, "^https?://") then
            invalid("data.payload.media", "item " .. i .. " needs an http(s) url")
        end
        out[i] = {
            url = m.url,
            contentType = type(m.content_type) == "string" and sub(m.content_type, 1, 200) or NULL,
            size = type(m.size) == "number" and tointeger(m.size) or NULL,
            sha256 = type(m.hash_sha256) == "string" and sub(m.hash_sha256, 1, 128) or NULL,
        }
    end
    return out
end

-- The first recipient of payload.to, which must be a non-empty array.
local function first_to(payload)
    local to = payload.to
    if type(to) ~= "table" or to[1] == nil then invalid("data.payload.to", "must be a non-empty array") end
    if type(to[1]) ~= "table" then invalid("data.payload.to", "must hold objects") end
    return to[1]
end

local function parse_received(p, ev)
    local to = first_to(p)
    if not is_phone(to.phone_number) then invalid("data.payload.to", "must hold an E.164 phone_number") end
    if type(p.from) ~= "table" or not is_phone(p.from.phone_number) then
        invalid("data.payload.from", "must hold an E.164 phone_number")
    end
    ev.church_number, ev.contact_number = to.phone_number, p.from.phone_number
    ev.text = text_of(p.text, "data.payload.text", MAX_TEXT)
    ev.media = check_media(p.media)
    -- Telnyx answered a keyword itself: steeple sends no reply of its own
    ev.autoresponse = p.autoresponse_type ~= nil and p.autoresponse_type ~= NULL
end

local function parse_status(p, ev)
    if type(p.from) ~= "table" or not is_phone(p.from.phone_number) then
        invalid("data.payload.from", "must hold an E.164 phone_number")
    end
    local status = first_to(p).status
    if not OUTBOUND_STATUSES[status] then invalid("data.payload.to", "must hold a known status") end
    ev.church_number, ev.status = p.from.phone_number, status
end

function M.parse(body)
    local t = codec.decode_object(body)
    if t == nil then errors.raise("invalid_json") end
    local data = t.data
    if type(data) ~= "table" then invalid("data", "is required") end
    if type(data.event_type) ~= "string" then invalid("data.event_type", "is required") end
    local ev = { type = data.event_type, event_id = type(data.id) == "string" and sub(data.id, 1, MAX_ID) or nil }
    local handled = data.event_type == "message.received" or STATUS_EVENTS[data.event_type]
    if not handled then return ev end
    local p = data.payload
    if type(p) ~= "table" then invalid("data.payload", "is required") end
    if type(p.id) ~= "string" or #p.id == 0 or #p.id > MAX_ID then invalid("data.payload.id", "is required") end
    ev.message_id = p.id
    if data.event_type == "message.received" then parse_received(p, ev) else parse_status(p, ev) end
    return ev
end

-- Applying -------------------------------------------------------------------

-- Keeps an event no church can take, for operators; once per event id.
function M.dead_letter(ev, reason, body)
    db.registry():query([[
        INSERT INTO dead_letters (event_id, event_type, phone_number, reason, body)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (event_id) WHERE event_id IS NOT NULL DO NOTHING]],
        ev.event_id or db.null, ev.type, ev.church_number or db.null, reason, body)
    return "unroutable"
end

M.NOT_YET = { message = "the church is still being registered" }

function M.retryable(e)
    return e == M.NOT_YET or db.is_transient(e) or group.is_timeout(e)
end

function M.church(ev)
    if ev.church_number == nil then return nil end
    return numbers.tenant(ev.church_number)
end

-- The church's database, or nil for no church. A church still being
-- registered cannot take messages yet: that counts as down.
local function church_db(t)
    if t == nil then return nil end
    if t.status == "provisioning" then error(M.NOT_YET, 0) end
    return db.pool(t.server, t.dbname)
end

-- A contact's conversation, per database and contact number, once seen:
-- conversations are never deleted, so a known one needs no upserts.
local MAX_KNOWN <const> = 100000
local known, nknown = {}, 0

-- The message of a known conversation, and its contact brought back if it
-- was deleted meanwhile (one index probe when it was not).
local INSERT_MESSAGE <const> = [[
    WITH m AS (
        INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                              provider_message_id)
        VALUES ($1, 'inbound', $2, $3, $4, $5::jsonb, 'received', $6)
        ON CONFLICT (provider_message_id) DO NOTHING
        RETURNING id),
    back AS (
        UPDATE contacts SET deleted_at = NULL, created_at = now(), updated_at = now()
        WHERE phone_number = $2 AND deleted_at IS NOT NULL AND EXISTS (SELECT 1 FROM m))
    SELECT id FROM m]]

-- The contact and conversation of an unknown sender, made or brought back
-- (the same in both statements below): a new contact of a suppressed number
-- starts opted out (the suppression's source), any other unknown; a deleted
-- one is brought back. Its row stays locked until the transaction ends.
-- Between CONTACT_FROM and CONTACT_UPSERTED: the senders' numbers, a relation
-- of one column, phone.
local CONTACT_FROM <const> = [[
        INSERT INTO contacts (phone_number, consent, consent_source, consent_at)
        SELECT n.phone, CASE WHEN s.source IS NULL THEN 'unknown' ELSE 'opted_out' END, s.source, s.created_at
        FROM]]
local CONTACT_UPSERTED <const> = [[
        n LEFT JOIN suppressions s ON s.phone_number = n.phone
        ORDER BY n.phone
        ON CONFLICT (phone_number) DO UPDATE SET
            deleted_at = NULL,
            created_at = CASE WHEN contacts.deleted_at IS NULL THEN contacts.created_at ELSE now() END,
            updated_at = CASE WHEN contacts.deleted_at IS NULL THEN contacts.updated_at ELSE now() END
        RETURNING id, phone_number]]
local UPSERT_CONVERSATION <const> = [[
        INSERT INTO conversations (contact_id) SELECT id FROM c
        ON CONFLICT (contact_id) DO UPDATE SET contact_id = EXCLUDED.contact_id
        RETURNING id, contact_id]]

-- One statement: contact and conversation upserted, the message inserted
-- unless its provider id is known; a trigger moves the conversation's
-- activity and unread count (0004_conversation_counters.sql). The contact's
-- row stays locked until the transaction ends (a keyword changes it next).
local UPSERT_AND_INSERT <const> = [[
    WITH c AS (]] .. CONTACT_FROM .. [[ (SELECT $1::text AS phone) ]] .. CONTACT_UPSERTED .. [[),
    v AS (]] .. UPSERT_CONVERSATION .. [[),
    m AS (
        INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                              provider_message_id)
        SELECT id, 'inbound', $1, $2, $3, $4::jsonb, 'received', $5 FROM v
        ON CONFLICT (provider_message_id) DO NOTHING
        RETURNING id, conversation_id)
    SELECT m.id, m.conversation_id, c.id AS contact_id FROM m, c]]

-- A sender this worker does not know yet: its conversation looked up first,
-- so that a contact who has one is not written (the upsert writes a new
-- version of both rows); one who has none, or no contact, gets them as
-- above. A deleted contact is brought back once the message is in.
local FIND_OR_UPSERT_AND_INSERT <const> = [[
    WITH f AS (
        SELECT k.id AS contact_id, k.deleted_at, v.id AS conversation_id
        FROM contacts k JOIN conversations v ON v.contact_id = k.id
        WHERE k.phone_number = $1),
    c AS (]] .. CONTACT_FROM .. [[ (SELECT $1::text AS phone WHERE NOT EXISTS (SELECT 1 FROM f))
        ]] .. CONTACT_UPSERTED .. [[),
    v AS (]] .. UPSERT_CONVERSATION .. [[),
    m AS (
        INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                              provider_message_id)
        SELECT coalesce((SELECT conversation_id FROM f), (SELECT id FROM v)), 'inbound', $1, $2, $3, $4::jsonb,
               'received', $5
        ON CONFLICT (provider_message_id) DO NOTHING
        RETURNING conversation_id),
    back AS (
        UPDATE contacts SET deleted_at = NULL, created_at = now(), updated_at = now()
        WHERE id = (SELECT contact_id FROM f WHERE deleted_at IS NOT NULL) AND EXISTS (SELECT 1 FROM m))
    SELECT conversation_id FROM m]]

-- The key of a contact's conversation in known.
local function known_key(handle, number)
    return handle.dbname .. "|" .. number
end

local function remember(key, conversation_id)
    if known[key] == nil then
        nknown = nknown + 1
        if nknown > MAX_KNOWN then known, nknown = {}, 1 end
    end
    known[key] = conversation_id
end

-- A retried keyword event: its transaction is rolled back (nothing changes).
local DUPLICATE <const> = { message = "a duplicate event" }

-- The slower path of a text that may be a keyword (messaging/consent.lua):
-- one transaction stores the message, applies the keyword and queues the
-- reply (none when Telnyx answered it: ev.autoresponse), whose delivery
-- starts once it committed. A word that is no list's keyword only stores.
local function store_keyword(handle, church, ev, media, kind, word)
    local ok, conversation, reply = pcall(db.transaction, handle, function(tx)
        local row = tx:query(UPSERT_AND_INSERT, ev.contact_number, ev.church_number, ev.text, media,
            ev.message_id)[1]
        if row == nil then error(DUPLICATE, 0) end
        local text, exempt = consent.apply(tx, church, { id = row.contact_id, phone = ev.contact_number },
            kind, word, row.id)
        if text == nil or ev.autoresponse then return row.conversation_id end
        return row.conversation_id, outbound.enqueue(tx, church.id, { conversation_id = row.conversation_id,
            from = ev.church_number, to = ev.contact_number, text = text, media = json.empty_array,
            exempt = exempt })
    end)
    if not ok then
        if conversation == DUPLICATE then return "duplicate" end
        error(conversation, 0)
    end
    remember(known_key(handle, ev.contact_number), conversation)
    if reply then outbound.start(church.server, church.dbname, reply.id) end
    return "stored"
end

-- One text, on its own: the known conversation's message, or the upserts.
local function store_received_one(handle, ev, media)
    local key = known_key(handle, ev.contact_number)
    local conversation = known[key]
    if conversation then
        local ok, rows = pcall(handle.query, handle, INSERT_MESSAGE, conversation, ev.contact_number,
            ev.church_number, ev.text, media, ev.message_id)
        if ok then return rows[1] and "stored" or "duplicate" end
        if not (db.is_error(rows) and rows.sqlstate == "23503") then error(rows, 0) end
        known[key] = nil -- the church's database was made again: upsert
    end
    local rows = handle:query(FIND_OR_UPSERT_AND_INSERT, ev.contact_number, ev.church_number, ev.text, media,
        ev.message_id)
    if rows[1] == nil then return "duplicate" end
    remember(key, rows[1].conversation_id)
    return "stored"
end

-- Texts of one church's database that arrived together, in one statement:
-- those of known conversations go straight to their messages, the others
-- look their conversations up, and only senders without one upsert their
-- contacts and conversations, as the statements above; a deleted contact
-- with a message in is brought back; a provider id already stored is
-- skipped. Returns the provider ids stored, with their conversations.
-- Batches of the same church run at once (one per worker), so each takes
-- its row locks in one order: contacts by number, then (the trigger, row
-- after row) conversations by id, a conversation's texts in the order they
-- came (its preview is the last one's). In the order the texts came, two
-- batches that share two senders could each wait for the other (PostgreSQL
-- ends that after deadlock_timeout, 1 s, by failing one of them).
local INSERT_BATCH <const> = [[
    WITH i AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb)
            AS i(n int, phone text, church text, text text, media text, pid text, conv uuid)),
    f AS (
        SELECT k.phone_number AS phone, v.id AS conv
        FROM contacts k JOIN conversations v ON v.contact_id = k.id
        WHERE k.phone_number IN (SELECT phone FROM i WHERE conv IS NULL)),
    c AS (]] .. CONTACT_FROM .. [[
            (SELECT DISTINCT phone FROM i WHERE conv IS NULL AND phone NOT IN (SELECT phone FROM f))
        ]] .. CONTACT_UPSERTED .. [[),
    v AS (]] .. UPSERT_CONVERSATION .. [[),
    m AS (
        INSERT INTO messages (conversation_id, direction, from_number, to_number, text, media, status,
                              provider_message_id)
        SELECT coalesce(i.conv, f.conv, v.id), 'inbound', i.phone, i.church, i.text, i.media::jsonb, 'received', i.pid
        FROM i LEFT JOIN f ON i.conv IS NULL AND f.phone = i.phone
        LEFT JOIN c ON i.conv IS NULL AND c.phone_number = i.phone
        LEFT JOIN v ON v.contact_id = c.id
        ORDER BY coalesce(i.conv, f.conv, v.id), i.n
        ON CONFLICT (provider_message_id) DO NOTHING
        RETURNING provider_message_id, conversation_id, from_number),
    back AS (
        UPDATE contacts SET deleted_at = NULL, created_at = now(), updated_at = now()
        WHERE deleted_at IS NOT NULL
          AND phone_number IN (SELECT phone FROM i WHERE conv IS NOT NULL UNION ALL SELECT phone FROM f)
          AND phone_number IN (SELECT from_number FROM m))
    SELECT provider_message_id AS pid, conversation_id FROM m]]

-- Texts of several senders in one statement (INSERT_BATCH): a provider id
-- twice in the batch is written once, the others are its duplicates.
local function store_received_together(handle, items)
    local rows, first = {}, {}
    for i, it in ipairs(items) do
        local ev = it.ev
        if first[ev.message_id] == nil then
            first[ev.message_id] = i
            rows[#rows + 1] = { n = i, phone = ev.contact_number, church = ev.church_number, text = ev.text,
                                media = it.media, pid = ev.message_id,
                                conv = known[known_key(handle, ev.contact_number)] }
        end
    end
    local conversation_of = {}
    for _, r in ipairs(handle:query(INSERT_BATCH, codec.encode(rows))) do conversation_of[r.pid] = r.conversation_id end
    local out = {}
    for i, it in ipairs(items) do
        local ev = it.ev
        local conversation = first[ev.message_id] == i and conversation_of[ev.message_id]
        if conversation then remember(known_key(handle, ev.contact_number), conversation) end
        out[i] = { ok = true, value = conversation and "stored" or "duplicate" }
    end
    return out
end

-- A writer for group.lua: the items that arrived together for one church's
-- database. Alone, an item is written by one(handle, item); several go in
-- one statement, together(handle, items) -> results, and when that fails
-- for a reason other than the database's state now, each is written on its
-- own, so that one bad item fails alone. Its database work is bounded by
-- spool.after_ms as a webhook's is: a slower database is down.
local function writer(one, together)
    local function each_alone(items)
        local out = {}
        for i, it in ipairs(items) do
            local ok, v = pcall(one, it.handle, it)
            out[i] = { ok = ok, value = v, err = v }
        end
        return out
    end
    return function(_, items)
        db.deadline(config.spool.after_ms)
        if #items == 1 then
            metrics.inc("steeple_webhook_batches_total", { written = "alone" })
            return each_alone(items)
        end
        local ok, out = pcall(together, items[1].handle, items)
        if ok then
            metrics.inc("steeple_webhook_batches_total", { written = "together" })
            return out
        end
        if db.is_transient(out) then error(out, 0) end
        metrics.inc("steeple_webhook_batches_total", { written = "one_by_one" })
        return each_alone(items)
    end
end

local received = group.new(writer(function(handle, it) return store_received_one(handle, it.ev, it.media) end,
    store_received_together))

-- A text that is no keyword joins the church's next batch (group.lua): the
-- texts that arrive while one is being written are written together.
local function store_received(handle, church, ev)
    local media = codec.encode(ev.media)
    local kind, word = consent.keyword(ev.text)
    if kind then return store_keyword(handle, church, ev, media, kind, word) end
    return received:submit(church.server .. "|" .. church.dbname, { handle = handle, ev = ev, media = media },
        config.spool.after_ms)
end

-- A status moves only forward: queued < sending < sent < the final ones.
local STATUS_ONE <const> = [[
    WITH m AS (
        SELECT id, status FROM messages
        WHERE provider_message_id = $1 AND direction = 'outbound' FOR UPDATE),
    u AS (
        UPDATE messages SET status = $2, updated_at = now() FROM m
        WHERE messages.id = m.id
          AND coalesce(array_position(ARRAY['queued', 'sending', 'sent'], m.status), 4)
            < coalesce(array_position(ARRAY['queued', 'sending', 'sent'], $2::text), 4)
        RETURNING messages.id)
    SELECT (SELECT count(*) FROM m) AS found]]

-- The statuses of several messages in one statement: each message moves
-- once, to the furthest of its statuses in the batch (the first of equals,
-- as one after the other would); the messages are locked in id order, so
-- that two batches never wait for each other in a circle. Returns the
-- provider ids found.
local STATUS_BATCH <const> = [[
    WITH i AS (
        SELECT i.n, i.pid, i.status, coalesce(array_position(ARRAY['queued', 'sending', 'sent'], i.status), 4) AS rank
        FROM jsonb_to_recordset($1::jsonb) AS i(n int, pid text, status text)),
    r AS (
        SELECT DISTINCT ON (pid) pid, status, rank FROM i ORDER BY pid, rank DESC, n),
    m AS (
        SELECT id, status, provider_message_id FROM messages
        WHERE provider_message_id IN (SELECT pid FROM r) AND direction = 'outbound'
        ORDER BY id FOR UPDATE),
    u AS (
        UPDATE messages SET status = r.status, updated_at = now() FROM m JOIN r ON r.pid = m.provider_message_id
        WHERE messages.id = m.id
          AND coalesce(array_position(ARRAY['queued', 'sending', 'sent'], m.status), 4) < r.rank
        RETURNING messages.id)
    SELECT provider_message_id AS pid FROM m]]

local function status_one(handle, it)
    return handle:query(STATUS_ONE, it.ev.message_id, it.ev.status)[1].found > 0 and "updated" or "ignored"
end

local function statuses_together(handle, items)
    local rows = {}
    for i, it in ipairs(items) do rows[i] = { n = i, pid = it.ev.message_id, status = it.ev.status } end
    local found = {}
    for _, r in ipairs(handle:query(STATUS_BATCH, codec.encode(rows))) do found[r.pid] = true end
    local out = {}
    for i, it in ipairs(items) do out[i] = { ok = true, value = found[it.ev.message_id] and "updated" or "ignored" } end
    return out
end

local statuses = group.new(writer(status_one, statuses_together))

-- A status joins the church's next batch of statuses, as a text does.
local function store_status(handle, church, ev)
    return statuses:submit(church.server .. "|" .. church.dbname, { handle = handle, ev = ev }, config.spool.after_ms)
end

function M.apply_to(church, ev, body)
    local result
    if ev.type == "message.received" or STATUS_EVENTS[ev.type] then
        local handle = church_db(church)
        if handle == nil then
            result = M.dead_letter(ev, "no church has this number", body)
        elseif ev.type == "message.received" then
            result = store_received(handle, church, ev)
        else
            result = store_status(handle, church, ev)
        end
    else
        result = "ignored"
    end
    metrics.inc("steeple_webhooks_total", { result = result })
    return result
end

function M.apply(ev, body)
    return M.apply_to(M.church(ev), ev, body)
end

return M
