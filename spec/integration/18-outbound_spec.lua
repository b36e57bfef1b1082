-- Outbound messages through a fake Telnyx API: sent, retried on 5xx and
-- timeouts, failed on 4xx, and sent after a restart; faults injected into
-- the registry's outbox mark, the claim of a try and the record of its
-- outcome never leave a message unsent, never queue one the client was told
-- failed, and never send one twice.
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

local psql, url_of = pg.psql, pg.url_of
local CHURCH <const> = "+15554000001"

describe("outbound messages", function()
    local reg, srv, tx, fake_pid, fake_port, fake_log, token, tenant_db, conversation

    local function fake_requests()
        local out = {}
        for line in (server.read_file(fake_log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end

    local function status_of(id)
        return psql(url_of(tenant_db), "SELECT status || ' ' || coalesce(provider_message_id, '-') || ' ' || "
            .. "send_attempts FROM messages WHERE id = '" .. id .. "'")
    end

    local function wait_status(id, want, timeout)
        local deadline = server.now() + server.slow(timeout)
        while server.now() < deadline do
            if status_of(id):match("^" .. want .. " ") then return status_of(id) end
            os.execute("sleep 0.2")
        end
        return status_of(id)
    end

    -- the fake's requests that carried this text
    local function requests_for(text)
        local n = 0
        for _, r in ipairs(fake_requests()) do
            if r.body.text == text then n = n + 1 end
        end
        return n
    end

    local function stored_with(text)
        return psql(url_of(tenant_db), "SELECT count(*) FROM messages WHERE text = '" .. text .. "'")
    end

    local function send(body, conv)
        return auth.post(srv, "/api/conversations/" .. (conv or conversation) .. "/messages", body,
            { Authorization = "Bearer " .. token })
    end

    local function start()
        srv = server.start {
            config = { limits = { request_timeout_s = 30 },
                       telnyx = { api_base = "http://127.0.0.1:" .. fake_port, send_attempts = 3, timeout_ms = 1000,
                                  sweep_interval_s = 1 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    TELNYX_API_KEY = "test-api-key" },
        }
    end

    setup(function()
        reg = auth.registry("outspec")
        tx = telnyx.new()
        fake_port = server.free_port()
        fake_log = server.tmpdir() .. "/fake.log"
        fake_pid = telnyx.start_fake(fake_port, fake_log)
        start()
        local res = auth.post(srv, "/api/auth/register", auth.church("out", { phoneNumber = CHURCH }))
        assert.equal(201, res.status, res.body)
        token = res.json.accessToken
        tenant_db = (psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'"))
        tx:deliver(srv, telnyx.received("out-in-1", "+15554009999", CHURCH, "hi"), function()
            return auth.get(srv, "/api/conversations", token).json.conversations[1] ~= nil
        end)
        conversation = auth.get(srv, "/api/conversations", token).json.conversations[1].id
        -- faults of the church's database, by the message's text: its first
        -- claim fails, the first record of its acceptance fails (transiently),
        -- or every record of its acceptance fails
        local _, ok = pg.psql_file(url_of(tenant_db), [[
            CREATE SEQUENCE fault_claims;
            CREATE SEQUENCE fault_records;
            CREATE SEQUENCE fault_refusals;
            CREATE FUNCTION outbound_faults() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.send_attempts > OLD.send_attempts AND NEW.text LIKE '%[claim-fails-once]%'
                   AND nextval('fault_claims') = 1 THEN
                    RAISE EXCEPTION 'injected: the claim fails' USING ERRCODE = 'serialization_failure';
                END IF;
                IF NEW.status = 'sent' AND NEW.text LIKE '%[record-fails-once]%'
                   AND nextval('fault_records') = 1 THEN
                    RAISE EXCEPTION 'injected: the record fails' USING ERRCODE = 'serialization_failure';
                END IF;
                IF NEW.status = 'sent' AND NEW.text LIKE '%[record-fails]%'
                   AND nextval('fault_refusals') > 0 THEN
                    RAISE EXCEPTION 'injected: the record fails for good';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER outbound_faults BEFORE UPDATE ON messages
                FOR EACH ROW EXECUTE FUNCTION outbound_faults();
        ]])
        assert(ok, "cannot install the fault trigger")
    end)

    teardown(function()
        if srv then srv:stop(10) end
        if fake_pid then os.execute("kill " .. fake_pid) end
        reg:drop()
        server.cleanup()
    end)

    it("stores the message as queued, sends it and records the provider's id", function()
        local res = send { text = "Service at 10", mediaUrls = { "https://media.example/flyer.png" } }
        assert.equal(202, res.status, res.body)
        local m = res.json.message
        assert.same({ direction = "outbound", from = CHURCH, to = "+15554009999", text = "Service at 10",
            status = "queued", media = { { url = "https://media.example/flyer.png" } } },
            { direction = m.direction, from = m.from, to = m.to, text = m.text, status = m.status, media = m.media })
        assert.truthy(wait_status(m.id, "sent", 10):match("^sent fake%-%d+ 1$"))
        local req = fake_requests()[#fake_requests()]
        assert.equal("Bearer test-api-key", req.authorization)
        assert.same({ from = CHURCH, to = "+15554009999", text = "Service at 10",
            media_urls = { "https://media.example/flyer.png" } }, req.body)
        -- the conversation shows it
        local msgs = auth.get(srv, "/api/conversations/" .. conversation .. "/messages", token).json.messages
        assert.equal(m.id, msgs[1].id)
    end)

    local function sends(outcome)
        return srv:metric('steeple_outbound_sends_total{outcome="' .. outcome .. '"}')
    end

    it("tries again after a 500 and then sends", function()
        local retried, sent = sends("retry"), sends("sent")
        local m = send({ text = "[500-once] retry me" }).json.message
        assert.truthy(wait_status(m.id, "sent", 15):match("^sent fake%-%d+ 2$"))
        assert.equal(retried + 1, sends("retry"))
        assert.equal(sent + 1, sends("sent"))
    end)

    it("fails at once on a 4xx, and after send_attempts timeouts", function()
        local rejected_before, retried = sends("rejected"), sends("retry")
        local rejected = send({ text = "[422] nope" }).json.message
        assert.truthy(wait_status(rejected.id, "failed", 10):match("^failed %- 1$"))
        assert.equal(rejected_before + 1, sends("rejected"))
        local slow = send({ text = "[timeout] slow" }).json.message
        assert.truthy(wait_status(slow.id, "failed", 30):match("^failed %- 3$"), status_of(slow.id))
        assert.equal(retried + 3, sends("retry"))
    end)

    it("sends messages left queued by a server that stopped", function()
        srv:stop(10)
        local id = psql(url_of(tenant_db), [[
            INSERT INTO messages (conversation_id, direction, from_number, to_number, text, status, next_attempt_at)
            VALUES (']] .. conversation .. [[', 'outbound', ']] .. CHURCH .. [[', '+15554009999', 'left behind',
                    'queued', now()) RETURNING id]])
        psql(reg.url, "INSERT INTO outbox_tenants (tenant_id) SELECT id FROM tenants ON CONFLICT DO NOTHING")
        start()
        assert.truthy(wait_status(id, "sent", 15):match("^sent fake%-%d+ 1$"), status_of(id))
        -- nothing is left to look for: the church leaves the outbox
        local deadline = server.now() + 5
        while psql(reg.url, "SELECT count(*) FROM outbox_tenants") ~= "0" and server.now() < deadline do
            os.execute("sleep 0.2")
        end
        assert.equal("0", psql(reg.url, "SELECT count(*) FROM outbox_tenants"))
    end)

    it("answers 503 and queues nothing when the registry cannot mark the church", function()
        psql(reg.url, "DELETE FROM outbox_tenants")
        local _, ok = pg.psql_file(reg.url, [[
            CREATE FUNCTION outbox_fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'injected: no mark' USING ERRCODE = 'lock_not_available';
            END $$;
            CREATE TRIGGER outbox_fault BEFORE INSERT ON outbox_tenants
                FOR EACH ROW EXECUTE FUNCTION outbox_fault();
        ]])
        assert(ok, "cannot install the registry fault")
        local text = "registry refuses the mark"
        local res = send { text = text }
        psql(reg.url, "DROP TRIGGER outbox_fault ON outbox_tenants")
        assert.equal(503, res.status, res.body)
        assert.equal("service_unavailable", res.json.error.code)
        assert.equal("0", stored_with(text))
        -- the client tries again: one message, sent once
        res = send { text = text }
        assert.equal(202, res.status, res.body)
        assert.truthy(wait_status(res.json.message.id, "sent", 10):match("^sent fake%-%d+ 1$"))
        assert.equal("1", stored_with(text))
        assert.equal(1, requests_for(text))
    end)

    it("sends a message queued while the sweep removes the church's mark", function()
        -- nothing left to send, but the church still marked: the next sweep removes the mark
        psql(reg.url, "INSERT INTO outbox_tenants (tenant_id) SELECT id FROM tenants ON CONFLICT DO NOTHING")
        assert.equal(200, auth.post(srv, "/test/outbound/pause", {}).status)
        assert.truthy(server.wait_until(function()
            return auth.get(srv, "/test/outbound/pause").json.paused
        end, 10), "the sweep never came to remove the mark")
        -- the message's own task stops at its claim (a database error): only
        -- the sweep can send it, and only if its church is still marked
        local res = send { text = "[claim-fails-once] queued during the sweep" }
        auth.post(srv, "/test/outbound/release", {})
        assert.equal(202, res.status, res.body)
        assert.truthy(server.wait_until(function()
            return auth.get(srv, "/test/outbound/pause").json.done
        end, 10), "the sweep never went on")
        local id = res.json.message.id
        assert.truthy(wait_status(id, "sent", 20):match("^sent fake%-%d+ 1$"), status_of(id))
        assert.equal(1, requests_for("[claim-fails-once] queued during the sweep"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("records the provider's acceptance after a failed first try, sending once", function()
        local text = "[record-fails-once] accepted"
        local m = send({ text = text }).json.message
        assert.truthy(wait_status(m.id, "sent", 15):match("^sent fake%-%d+ 1$"), status_of(m.id))
        assert.equal(1, requests_for(text))
    end)

    it("never sends again a message whose acceptance could not be recorded", function()
        local text = "[record-fails] accepted but not recorded"
        local m = send({ text = text }).json.message
        assert.truthy(server.wait_until(function()
            return psql(url_of(tenant_db), "SELECT is_called FROM fault_refusals") == "t"
        end, 15), "the record of the acceptance was never refused")
        -- its lease runs out (as after a restart): the sweep reports it, and
        -- only reports it
        psql(url_of(tenant_db), "UPDATE messages SET next_attempt_at = now() - interval '1 second' "
            .. "WHERE id = '" .. m.id .. "'")
        local left = server.wait_until(function()
            return psql(reg.url, "SELECT count(*) FROM outbox_tenants") == "0"
        end, 10)
        assert.equal(1, requests_for(text))
        assert.truthy(left, "the sweep kept the church in the outbox")
        assert.truthy(srv:log_contains("could not be recorded"), "the lost record was not logged")
        assert.truthy(srv:log_contains("outcome is unknown"), "the sweep did not report the message")
        assert.truthy(status_of(m.id):match("^sending %- 1$"), status_of(m.id))
        assert.equal("", psql(url_of(tenant_db), "SELECT next_attempt_at FROM messages WHERE id = '" .. m.id .. "'"))
        assert.equal(1, tonumber(srv:metric("steeple_outbound_unknown_total")))
        assert.same({}, srv:unexpected_errors { "could not be recorded" })
    end)

    it("refuses bad messages", function()
        local function fields(body, conv)
            local res = send(body, conv)
            assert.equal(400, res.status, res.body)
            assert.equal("validation_failed", res.json.error.code)
            return res.json.error.fields
        end
        assert.truthy(fields({ text = ("x"):rep(1601) }).text)
        assert.truthy(fields({ text = "" }).text)
        assert.truthy(fields({}).text)
        assert.truthy(fields({ text = 5 }).text)
        assert.truthy(fields({ mediaUrls = "https://x.example/a.png" }).mediaUrls)
        assert.truthy(fields({ mediaUrls = { "ftp://x.example/a" } }).mediaUrls)
        assert.equal(404, send({ text = "x" }, "00000000-0000-4000-8000-000000000000").status)
        assert.equal(404, send({ text = "x" }, "nope").status)
        assert.equal(401, auth.post(srv, "/api/conversations/" .. conversation .. "/messages", { text = "x" }).status)
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
