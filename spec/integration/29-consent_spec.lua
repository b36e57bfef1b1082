-- Consent by text message (API.md "Consent"): STOP, START, HELP and the
-- lists' keywords applied with the inbound message in one transaction, one
-- reply each through the outbound path, retried events changing nothing,
-- the send path holding an opt-out, Telnyx's 40300 opting a number out, and
-- a keyword spooled while the church's database is down applied once.
local server = require "support.server"
local suite = require "support.suite"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local HOOK <const> = "/api/webhooks/telnyx/messaging"
local CHURCH <const> = "+15559100001"
local HELPFUL <const> = "+15559100002"
local HELP_TEXT <const> = "Call the office at 555-0100, weekdays 9-5."

local STOPPED <const> = "Church cA: you are unsubscribed and will get no more messages. Reply START to resubscribe."
local STARTED <const> = "Church cA: you are subscribed again. Reply STOP to unsubscribe, HELP for help."

describe("consent", function()
    local reg, tx, fake_pid, fake_log, blocked_file, token
    local dbs = {}
    local seq = 0

    -- the server sends to a fake Telnyx that refuses the numbers in blocked_file
    local srv = suite.server(function()
        reg = auth.registry("consentspec")
        tx = telnyx.new()
        local port = server.free_port()
        local dir = server.tmpdir()
        fake_log, blocked_file = dir .. "/fake.log", dir .. "/blocked"
        server.write_file(blocked_file, "")
        fake_pid = telnyx.start_fake(port, fake_log, blocked_file)
        return {
            config = { limits = { request_timeout_s = 30 },
                       telnyx = { api_base = "http://127.0.0.1:" .. port, send_attempts = 3, timeout_ms = 1000,
                                  sweep_interval_s = 1 },
                       spool = { replay_interval_s = 0.2 },
                       db = { breaker_open_s = 0.5 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    TELNYX_API_KEY = "test-api-key", STEEPLE_SPOOL_DIR = dir .. "/spool" },
        }
    end, {
        stop_s = 10,
        after = function()
            if fake_pid then os.execute("kill " .. fake_pid) end
            reg:drop()
        end,
    })

    local function q(sql, church)
        return (psql(url_of(dbs[church or CHURCH]), sql))
    end

    -- A number of its own for each case.
    local function number()
        seq = seq + 1
        return string.format("+1555920%04d", seq)
    end

    -- A message.received body; extra fields go into data.payload.
    local function received(id, from, text, extra, to)
        local body = telnyx.received(id, from, to or CHURCH, text)
        if extra == nil then return body end
        local t = cjson.decode(body)
        for k, v in pairs(extra) do t.data.payload[k] = v end
        return cjson.encode(t)
    end

    local function stored(id, church)
        return q("SELECT count(*) FROM messages WHERE provider_message_id = '" .. id .. "'", church) == "1"
    end

    -- Delivers an inbound text and waits until it is stored.
    local function text_in(from, text, extra, church)
        seq = seq + 1
        local id = "cs-" .. auth.STAMP .. "-" .. seq
        tx:deliver(srv, received(id, from, text, extra, church), function() return stored(id, church) end)
        return id
    end

    local function state(phone, church)
        return q("SELECT consent || ' ' || coalesce(consent_source, '-') FROM contacts WHERE phone_number = '"
            .. phone .. "'", church)
    end

    local function history(phone, church)
        return q("SELECT coalesce(string_agg(from_state || '>' || to_state || ':' || source, ',' ORDER BY id), '') "
            .. "FROM consent_events WHERE phone_number = '" .. phone .. "'", church)
    end

    local function suppression(phone, church)
        return q("SELECT coalesce((SELECT source FROM suppressions WHERE phone_number = '" .. phone .. "'), '-')",
            church)
    end

    -- The texts of the outbound messages to phone, oldest first, "|" between.
    local function replies(phone, church)
        return q("SELECT coalesce(string_agg(text, '|' ORDER BY created_at, id), '') FROM messages "
            .. "WHERE direction = 'outbound' AND to_number = '" .. phone .. "'", church)
    end

    local function fake_requests()
        local out = {}
        for line in (server.read_file(fake_log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end

    -- The fake's requests to phone (or with that text).
    local function sends_to(phone, text)
        local n = 0
        for _, r in ipairs(fake_requests()) do
            if r.body.to == phone and (text == nil or r.body.text == text) then n = n + 1 end
        end
        return n
    end

    -- Waits until every outbound message to phone has an outcome; true when
    -- they were all sent.
    local function settled(phone, church)
        local function pending()
            return q("SELECT count(*) FROM messages WHERE direction = 'outbound' AND to_number = '" .. phone
                .. "' AND status IN ('queued', 'sending')", church)
        end
        assert.truthy(server.wait_until(function() return pending() == "0" end, 20), "a reply was never sent")
        return q("SELECT count(*) FROM messages WHERE direction = 'outbound' AND to_number = '" .. phone
            .. "' AND status <> 'sent'", church) == "0"
    end

    local function register(n, phone)
        local res = auth.post(srv, "/api/auth/register", auth.church(n, { phoneNumber = phone }))
        assert.equal(201, res.status, res.body)
        dbs[phone] = psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")
        return res.json
    end

    setup(function()
        token = register("cA", CHURCH).accessToken
        -- the second church's help text is set before any of its webhooks
        -- (the routing cache then holds it)
        local b = register("cB", HELPFUL)
        psql(reg.url, "UPDATE tenants SET help_text = '" .. HELP_TEXT .. "' WHERE id = '" .. b.tenantId .. "'")
    end)


    it("opts out on each STOP word, whatever its case, spaces and trailing punctuation, with one reply", function()
        local spellings = { "STOP", "stopall", "  Unsubscribe  ", "cancel.", "End!", "QUIT?!", "\tRevoke\n",
            "opt   out", "OptOut..." }
        local phones = {}
        for i, text in ipairs(spellings) do
            phones[i] = number()
            text_in(phones[i], text)
        end
        for i, phone in ipairs(phones) do
            local what = ("%q"):format(spellings[i])
            assert.equal("opted_out keyword", state(phone), what)
            assert.equal("keyword", suppression(phone), what)
            assert.equal("unknown>opted_out:keyword", history(phone), what)
            assert.equal(STOPPED, replies(phone), what)
        end
        for _, phone in ipairs(phones) do
            assert.is_true(settled(phone))
            assert.equal(1, sends_to(phone, STOPPED))
        end
        -- the history's message is the stored STOP; the reply is in the conversation
        local phone = phones[1]
        assert.equal("t", q("SELECT e.message_id = m.id FROM consent_events e JOIN messages m "
            .. "ON m.from_number = e.phone_number AND m.direction = 'inbound' WHERE e.phone_number = '" .. phone .. "'"))
        assert.equal("2", q("SELECT count(*) FROM messages m JOIN conversations v ON v.id = m.conversation_id "
            .. "JOIN contacts c ON c.id = v.contact_id WHERE c.phone_number = '" .. phone .. "'"))
        local req
        for _, r in ipairs(fake_requests()) do
            if r.body.to == phone then req = r end
        end
        assert.same({ from = CHURCH, to = phone, text = STOPPED }, req.body)
        assert.same({}, srv:unexpected_errors())
    end)

    it("takes a sentence that holds a keyword for an ordinary message", function()
        local phone = number()
        text_in(phone, "please stop texting me so often")
        text_in(phone, "Stop it")
        text_in(phone, "STOP \u{1F6D1}")
        assert.equal("unknown -", state(phone))
        assert.equal("", history(phone))
        assert.equal("-", suppression(phone))
        assert.equal("", replies(phone))
        assert.equal("3", q("SELECT count(*) FROM messages WHERE from_number = '" .. phone .. "'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("applies a STOP retried five times once, with one reply", function()
        local phone = number()
        local body = received("cs-retried-" .. auth.STAMP, phone, "STOP")
        tx:deliver(srv, body, function() return stored("cs-retried-" .. auth.STAMP) end)
        for attempt = 2, 5 do
            local res = tx:post(srv, HOOK, (body:gsub('"attempt":1', '"attempt":' .. attempt)))
            assert.truthy(telnyx.accepted(res, "duplicate") and res.json.status ~= "stored", res.body)
        end
        assert.is_true(settled(phone))
        assert.equal("opted_out keyword", state(phone))
        assert.equal("unknown>opted_out:keyword", history(phone))
        assert.equal(STOPPED, replies(phone))
        assert.equal(1, sends_to(phone))
        assert.equal("1", q("SELECT count(*) FROM messages WHERE from_number = '" .. phone .. "'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("follows STOP, START and STOP again, keeping each change", function()
        local phone = number()
        text_in(phone, "Stop")
        assert.equal("opted_out keyword", state(phone))
        text_in(phone, "start")
        assert.equal("opted_in keyword", state(phone))
        assert.equal("-", suppression(phone))
        text_in(phone, "UNSTOP") -- already in: the reply again, no change recorded
        text_in(phone, "quit")
        assert.equal("opted_out keyword", state(phone))
        assert.equal("keyword", suppression(phone))
        assert.equal("unknown>opted_out:keyword,opted_out>opted_in:keyword,opted_in>opted_out:keyword", history(phone))
        assert.equal(table.concat({ STOPPED, STARTED, STARTED, STOPPED }, "|"), replies(phone))
        assert.is_true(settled(phone))
        assert.equal(4, sends_to(phone))
        assert.same({}, srv:unexpected_errors())
    end)

    it("confirms a STOP once: another STOP from the opted-out number is stored and answered with nothing", function()
        local phone = number()
        text_in(phone, "STOP")
        assert.is_true(settled(phone))
        text_in(phone, "stop")
        text_in(phone, "Unsubscribe")
        assert.equal("opted_out keyword", state(phone))
        assert.equal("unknown>opted_out:keyword", history(phone))
        assert.equal("keyword", suppression(phone))
        assert.equal(STOPPED, replies(phone))
        assert.equal("3", q("SELECT count(*) FROM messages WHERE from_number = '" .. phone .. "'"))
        assert.is_true(settled(phone))
        assert.equal(1, sends_to(phone))
        assert.same({}, srv:unexpected_errors())
    end)

    it("applies the change but sends no reply when Telnyx answered the keyword itself", function()
        local phone = number()
        text_in(phone, "STOP", { autoresponse_type = "stop" })
        assert.equal("opted_out keyword", state(phone))
        assert.equal("unknown>opted_out:keyword", history(phone))
        text_in(phone, "HELP", { autoresponse_type = "help" })
        text_in(phone, "YES", { autoresponse_type = "start" })
        assert.equal("opted_in keyword", state(phone))
        assert.equal("", replies(phone))
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers HELP, with the church's help text when set, whatever the consent, changing nothing", function()
        local phone = number()
        text_in(phone, "help")
        assert.equal("unknown -", state(phone))
        assert.equal("", history(phone))
        assert.equal("Church cA: reply STOP to unsubscribe.", replies(phone))
        -- an opted-out number still gets the answer
        local other = number()
        text_in(other, "HELP", nil, HELPFUL)
        text_in(other, "stop", nil, HELPFUL)
        text_in(other, "Info?", nil, HELPFUL)
        local answer = "Church cB: reply STOP to unsubscribe. " .. HELP_TEXT
        assert.equal(answer .. "|Church cB: you are unsubscribed and will get no more messages. Reply START to "
            .. "resubscribe.|" .. answer, replies(other, HELPFUL))
        assert.equal("opted_out keyword", state(other, HELPFUL))
        assert.equal("unknown>opted_out:keyword", history(other, HELPFUL))
        assert.is_true(settled(phone))
        assert.is_true(settled(other, HELPFUL))
        assert.equal(2, sends_to(other, answer))
        assert.same({}, srv:unexpected_errors())
    end)

    it("opts a number out when Telnyx refuses a send with 40300", function()
        local phone = number()
        text_in(phone, "hello there, is anyone around")
        local conversation = q("SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id "
            .. "WHERE c.phone_number = '" .. phone .. "'")
        local res = auth.post(srv, "/api/conversations/" .. conversation .. "/messages",
            { text = "[40300] Choir practice moved" }, { Authorization = "Bearer " .. token })
        assert.equal(202, res.status, res.body)
        assert.is_false(settled(phone))
        assert.equal("failed", q("SELECT status FROM messages WHERE id = '" .. res.json.message.id .. "'"))
        assert.equal("opted_out carrier", state(phone))
        assert.equal("carrier", suppression(phone))
        assert.equal("unknown>opted_out:carrier", history(phone))
        assert.equal("", q("SELECT coalesce(message_id::text, '') FROM consent_events WHERE phone_number = '"
            .. phone .. "'"))
        -- the STOP confirmation refused by the carrier changes nothing more
        local stopped = number()
        server.write_file(blocked_file, stopped .. "\n")
        text_in(stopped, "STOP")
        assert.is_false(settled(stopped))
        server.write_file(blocked_file, "")
        assert.equal("opted_out keyword", state(stopped))
        assert.equal("unknown>opted_out:keyword", history(stopped))
        assert.same({}, srv:unexpected_errors())
    end)

    it("never sends a message queued before a STOP", function()
        local phone = number()
        text_in(phone, "hi, what time is the service on sunday")
        local conversation = q("SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id "
            .. "WHERE c.phone_number = '" .. phone .. "'")
        -- queued, due only later (as behind a back-off)
        local id = q("INSERT INTO messages (conversation_id, direction, from_number, to_number, text, status, "
            .. "next_attempt_at) VALUES ('" .. conversation .. "', 'outbound', '" .. CHURCH .. "', '" .. phone
            .. "', 'queued before the stop', 'queued', now() + interval '1 hour') RETURNING id")
        text_in(phone, "STOP")
        -- its time comes: the sweep finds it and fails it unsent
        q("UPDATE messages SET next_attempt_at = now() WHERE id = '" .. id .. "'")
        psql(reg.url, "INSERT INTO outbox_tenants (tenant_id) SELECT id FROM tenants WHERE phone_number = '"
            .. CHURCH .. "' ON CONFLICT DO NOTHING")
        assert.is_false(settled(phone))
        assert.equal("failed 0", q("SELECT status || ' ' || send_attempts FROM messages WHERE id = '" .. id .. "'"))
        assert.equal(0, sends_to(phone, "queued before the stop"))
        assert.equal(1, sends_to(phone, STOPPED))
        assert.same({}, srv:unexpected_errors())
    end)

    it("joins a list by its keyword, in any case, opting in", function()
        local list = q("INSERT INTO lists (name, keyword) VALUES ('Youth group', 'YOUTH') RETURNING id")
        local phone = number()
        text_in(phone, "youth")
        assert.equal("opted_in keyword", state(phone))
        assert.equal("unknown>opted_in:keyword", history(phone))
        assert.equal("1", q("SELECT count(*) FROM list_members m JOIN contacts c ON c.id = m.contact_id "
            .. "WHERE m.list_id = '" .. list .. "' AND c.phone_number = '" .. phone .. "'"))
        local joined = "Church cA: you joined Youth group. Reply STOP to unsubscribe."
        assert.equal(joined, replies(phone))
        -- a number that opted out comes back with the keyword
        local back = number()
        text_in(back, "STOP")
        text_in(back, " Youth! ")
        assert.equal("opted_in keyword", state(back))
        assert.equal("-", suppression(back))
        assert.equal("unknown>opted_out:keyword,opted_out>opted_in:keyword", history(back))
        assert.equal("2", q("SELECT member_count FROM lists WHERE id = '" .. list .. "'"))
        -- a word that is no list's keyword is an ordinary message
        text_in(back, "Thanks")
        assert.equal(STOPPED .. "|" .. joined, replies(back))
        assert.is_true(settled(phone))
        assert.is_true(settled(back))
        assert.same({}, srv:unexpected_errors())
    end)

    it("finds the contact of every message: created, brought back, opted out when suppressed", function()
        -- a new contact: unknown
        local phone = number()
        text_in(phone, "good morning")
        assert.equal("unknown -", state(phone))
        -- a number suppressed without a contact starts opted out
        local suppressed = number()
        q("INSERT INTO suppressions (phone_number, source) VALUES ('" .. suppressed .. "', 'carrier')")
        text_in(suppressed, "is anyone there")
        assert.equal("opted_out carrier", state(suppressed))
        -- a deleted contact is brought back by its next message, its
        -- conversation known to the worker or not
        q("UPDATE contacts SET deleted_at = now(), first_name = NULL WHERE phone_number = '" .. phone .. "'")
        text_in(phone, "still here")
        assert.equal("", q("SELECT coalesce(deleted_at::text, '') FROM contacts WHERE phone_number = '" .. phone .. "'"))
        local stopped = number()
        text_in(stopped, "STOP")
        q("UPDATE contacts SET deleted_at = now() WHERE phone_number = '" .. stopped .. "'")
        text_in(stopped, "START")
        assert.equal("opted_in keyword", state(stopped))
        assert.equal("", q("SELECT coalesce(deleted_at::text, '') FROM contacts WHERE phone_number = '" .. stopped .. "'"))
        assert.is_true(settled(stopped))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stores keyword-like bad input as ordinary messages", function()
        local phone = number()
        text_in(phone, "\u{1F6D1} STOP")
        text_in(phone, "STOP" .. ("!"):rep(9996))
        text_in(phone, ("stop "):rep(2000))
        local media = { { url = "https://media.example/stop.png", content_type = "image/png" } }
        seq = seq + 1
        local id = "cs-media-" .. auth.STAMP .. "-" .. seq
        local body = cjson.decode(received(id, phone, "x"))
        body.data.payload.text = ""
        body.data.payload.media = media
        tx:deliver(srv, cjson.encode(body), function() return stored(id) end)
        assert.equal("unknown -", state(phone))
        assert.equal("", replies(phone))
        assert.equal("4", q("SELECT count(*) FROM messages WHERE from_number = '" .. phone .. "'"))
        -- over the limit: refused, nothing stored
        local res = tx:post(srv, HOOK, received("cs-long-" .. auth.STAMP, phone, ("S"):rep(10001)))
        assert.equal(400, res.status, res.body)
        assert.equal("validation_failed", res.json.error.code)
        assert.equal("4", q("SELECT count(*) FROM messages WHERE from_number = '" .. phone .. "'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("applies a STOP spooled while the church's database is down once, with one reply", function()
        local phone = number()
        local db = dbs[CHURCH]
        psql(pg.BASE_URL, "ALTER DATABASE " .. db .. " WITH ALLOW_CONNECTIONS false")
        psql(pg.BASE_URL, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '" .. db .. "'")
        local id = "cs-spooled-" .. auth.STAMP
        local body = received(id, phone, "Stop.")
        local ok, err = pcall(function()
            for attempt = 1, 3 do
                local res = tx:post(srv, HOOK, (body:gsub('"attempt":1', '"attempt":' .. attempt)))
                assert.equal(202, res.status, res.body)
                assert.same({ status = "spooled" }, res.json)
            end
        end)
        psql(pg.BASE_URL, "ALTER DATABASE " .. db .. " WITH ALLOW_CONNECTIONS true")
        assert(ok, err)
        assert.truthy(server.wait_until(function() return stored(id) end, 30), "the spooled STOP was never applied")
        assert.truthy(server.wait_until(function() return tonumber(srv:metric("steeple_spool_pending")) == 0 end, 20),
            "the spool never emptied")
        assert.is_true(settled(phone))
        assert.equal("opted_out keyword", state(phone))
        assert.equal("unknown>opted_out:keyword", history(phone))
        assert.equal(STOPPED, replies(phone))
        assert.equal(1, sends_to(phone))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
