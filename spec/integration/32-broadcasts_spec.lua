-- Broadcasts (API.md "Broadcasts"): the routes and their checks, and the
-- dispatcher against the fake Telnyx API: everyone on the lists who opted in
-- gets one text, with merge fields filled in, whatever 429s and 500s the API
-- answers; pausing, resuming and cancelling; sendAt; quiet hours in the
-- recipient's time zone; the counts kept from the status webhooks and
-- replies; the church's rate over two workers.
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

describe("broadcasts", function()
    local reg, srv, tx, fake_log, chaos_file
    local fake_pid
    local church, other
    local seq = 0

    local function q(sql, c)
        return (psql(url_of((c or church).db), sql))
    end

    local function call(method, path, body, c)
        return auth.call(srv, method, path, (c or church).token, body)
    end

    -- A list of n opted-in contacts with numbers prefix .. 0001 ..; returns its id.
    local function list_of(n, prefix, c, names)
        seq = seq + 1
        local id = q("INSERT INTO lists (name) VALUES ('list " .. seq .. "') RETURNING id", c)
        q(string.format([[
            INSERT INTO contacts (phone_number, first_name, consent, consent_source, consent_at)
            SELECT '%s' || lpad(i::text, 4, '0'), %s, 'opted_in', 'admin', now() FROM generate_series(1, %d) i
            ON CONFLICT (phone_number) DO NOTHING;
            INSERT INTO list_members (list_id, contact_id)
            SELECT '%s', id FROM contacts WHERE phone_number LIKE '%s%%' ON CONFLICT DO NOTHING]],
            prefix, names and "'Name' || i" or "NULL", n, id, prefix), c)
        return id
    end

    local function requests()
        local out = {}
        for line in (server.read_file(fake_log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end

    -- The fake's answers to each number with a prefix: { [to] = { statuses } }.
    local function calls(prefix)
        local by = {}
        for _, r in ipairs(requests()) do
            local to = r.body.to
            if type(to) == "string" and to:sub(1, #prefix) == prefix then
                by[to] = by[to] or {}
                table.insert(by[to], r.answer)
            end
        end
        return by
    end

    local function broadcast(id, c)
        local res = call("GET", "/api/broadcasts/" .. id, nil, c)
        assert.equal(200, res.status, res.body)
        return res.json.broadcast
    end

    local function wait_status(id, status, seconds, c)
        local b
        local ok = server.wait_until(function()
            b = broadcast(id, c)
            return b.status == status
        end, seconds)
        assert.truthy(ok, "broadcast " .. id .. " is " .. tostring(b and b.status) .. ", not " .. status)
        return b
    end

    local function create(body, c)
        local res = call("POST", "/api/broadcasts", body, c)
        assert.equal(201, res.status, res.body)
        return res.json.broadcast
    end

    local function set_chaos(text) server.write_file(chaos_file, text) end

    local function reload(changes)
        for section, values in pairs(changes) do
            for k, v in pairs(values) do srv.config[section][k] = v end
        end
        server.write_config(srv.config, srv.dir)
        local function reloads()
            local _, n = srv:log_text():gsub("scripts reloaded", "")
            return n
        end
        local want = reloads() + 2 -- both workers
        assert.is_true(srv:sighup())
        assert.truthy(server.wait_until(function() return reloads() >= want end, 10), "the workers did not reload")
    end

    setup(function()
        reg = auth.registry("bcastspec")
        tx = telnyx.new()
        local port = server.free_port()
        local dir = server.tmpdir()
        fake_log, chaos_file = dir .. "/fake.log", dir .. "/chaos"
        server.write_file(chaos_file, "")
        fake_pid = telnyx.start_fake(port, fake_log, dir .. "/none", chaos_file)
        srv = server.start {
            config = { workers = 2, limits = { request_timeout_s = 30 },
                       telnyx = { api_base = "http://127.0.0.1:" .. port, send_attempts = 3, timeout_ms = 2000,
                                  max_per_second = 0 },
                       messaging = { rate_per_min = 0, daily_cap = 0, quiet_start = "00:00", quiet_end = "00:00",
                                     dispatch_interval_s = 1 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    TELNYX_API_KEY = "test-api-key" },
        }
        church = reg:church(srv, "bA", { phoneNumber = "+15559300001" })
        other = reg:church(srv, "bB", { phoneNumber = "+15559300002" })
    end)

    teardown(function()
        if srv then srv:stop() end
        if fake_pid then os.execute("kill " .. fake_pid .. " 2>/dev/null") end
        if reg then reg:drop() end
        server.cleanup()
    end)

    before_each(function() srv:mark() end)
    after_each(function() assert.same({}, srv:unexpected_errors()) end)

    describe("routes", function()
        local list

        setup(function() list = list_of(2, "+1555931", nil, true) end)

        it("creates a scheduled broadcast and reads it, alone and in pages", function()
            local at = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 3600)
            local b = create { text = "Hello {{firstName|friend}}", lists = { list }, sendAt = at }
            assert.equal("scheduled", b.status)
            assert.same({ list }, b.lists)
            assert.equal(at:sub(1, 19), b.sendAt:sub(1, 19))
            assert.equal(cjson.null, b.startedAt)
            assert.same({ recipients = 0, queued = 0, sent = 0, delivered = 0, failed = 0, optedOut = 0, replies = 0 },
                b.counts)
            assert.same(b, broadcast(b.id))
            local second = create { text = "Second", lists = { list }, sendAt = at }
            local page = call("GET", "/api/broadcasts?limit=1")
            assert.equal(200, page.status)
            assert.equal(second.id, page.json.broadcasts[1].id)
            local rest = call("GET", "/api/broadcasts?limit=1&cursor=" .. page.json.nextCursor)
            assert.equal(b.id, rest.json.broadcasts[1].id)
            for _, id in ipairs { b.id, second.id } do
                assert.equal(200, call("POST", "/api/broadcasts/" .. id .. "/cancel").status)
            end
        end)

        it("refuses bad input with the field named", function()
            local long = string.rep("x", 1590)
            local many = {}
            for i = 1, 10000 do many[i] = "00000000-0000-4000-8000-" .. string.format("%012d", i) end
            local cases = {
                { { text = "Hi {{nickname}}", lists = { list } }, "text" },
                { { text = long .. " {{firstName}}", lists = { list } }, "text" },
                { { text = string.rep("y", 1601), lists = { list } }, "text" },
                { { text = "{{firstName}}", lists = { list } }, "text" },
                { { text = "Hi {{firstName", lists = { list } }, "text" },
                { { text = "Hi", lists = {} }, "lists" },
                { { text = "Hi", lists = many }, "lists" },
                { { text = "Hi", lists = { "not-an-id" } }, "lists" },
                { { text = "Hi", lists = { list_of(1, "+1555932", other) } }, "lists" },
                { { text = "Hi", lists = { list }, sendAt = "tomorrow" }, "sendAt" },
                { { text = "Hi", lists = { list }, sendAt = "2026-02-30T10:00:00Z" }, "sendAt" },
                { { text = "Hi", lists = { list }, sendAt = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 366 * 86400) },
                  "sendAt" },
                { { text = "Hi", lists = { list }, mediaUrls = { "ftp://x" } }, "mediaUrls" },
            }
            for i, case in ipairs(cases) do
                local res = call("POST", "/api/broadcasts", case[1])
                assert.equal(400, res.status, "case " .. i .. ": " .. res.body)
                assert.is_string(auth.fields(res)[case[2]], "case " .. i .. ": " .. res.body)
            end
            local before = q("SELECT count(*) FROM broadcasts")
            assert.equal(before, q("SELECT count(*) FROM broadcasts"))
            -- fallbacks make a text of merge fields only a text
            local ok = call("POST", "/api/broadcasts", { text = "{{firstName|friend}}", lists = { list },
                sendAt = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 3600) })
            assert.equal(201, ok.status, ok.body)
            assert.equal(200, call("POST", "/api/broadcasts/" .. ok.json.broadcast.id .. "/cancel").status)
        end)

        it("keeps churches apart and answers invalid moves with 409 invalid_state", function()
            local b = create { text = "Mine", lists = { list }, sendAt = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 600) }
            for _, path in ipairs { "", "/pause", "/resume", "/cancel" } do
                local method = path == "" and "GET" or "POST"
                assert.equal(404, call(method, "/api/broadcasts/" .. b.id .. path, nil, other).status, path)
            end
            assert.equal(404, call("GET", "/api/broadcasts/not-an-id").status)
            assert.equal(409, call("POST", "/api/broadcasts/" .. b.id .. "/resume").status)
            assert.equal("paused", call("POST", "/api/broadcasts/" .. b.id .. "/pause").json.broadcast.status)
            assert.equal(409, call("POST", "/api/broadcasts/" .. b.id .. "/pause").status)
            assert.equal("scheduled", call("POST", "/api/broadcasts/" .. b.id .. "/resume").json.broadcast.status)
            local cancelled = call("POST", "/api/broadcasts/" .. b.id .. "/cancel")
            assert.equal("cancelled", cancelled.json.broadcast.status)
            assert.is_string(cancelled.json.broadcast.finishedAt)
            local again = call("POST", "/api/broadcasts/" .. b.id .. "/cancel")
            assert.equal(409, again.status)
            assert.equal("invalid_state", again.json.error.code)
        end)
    end)

    describe("sending", function()
        it("texts every opted-in member once, names filled in, and appears in the conversations", function()
            local a = list_of(5, "+1555933", nil, true)
            local b = list_of(3, "+1555933") -- the same first three numbers: in two lists
            q([[UPDATE contacts SET consent = 'opted_out', consent_source = 'keyword' WHERE phone_number = '+15559330005';
                INSERT INTO contacts (phone_number) VALUES ('+15559330099');
                INSERT INTO list_members (list_id, contact_id)
                SELECT ']] .. a .. [[', id FROM contacts WHERE phone_number = '+15559330099']])
            local bc = create { text = "Hi {{firstName|friend}} from {{churchName}}", lists = { a, b } }
            local done = wait_status(bc.id, "done", 30)
            assert.same({ recipients = 4, queued = 0, sent = 4, delivered = 0, failed = 0, optedOut = 0, replies = 0 },
                done.counts)
            assert.is_string(done.startedAt)
            local by = calls("+1555933")
            for i = 1, 4 do
                local to = string.format("+155593300%02d", i)
                assert.same({ 200 }, by[to], to)
            end
            assert.is_nil(by["+15559330005"])
            assert.is_nil(by["+15559330099"])
            local texts = {}
            for _, r in ipairs(requests()) do
                if r.body.to == "+15559330002" then texts[#texts + 1] = r.body.text end
            end
            assert.same({ "Hi Name2 from Church bA" }, texts)
            assert.equal("4", q([[SELECT count(*) FROM messages m JOIN broadcast_recipients r ON r.message_id = m.id
                WHERE m.status = 'sent' AND m.direction = 'outbound' AND m.to_number LIKE '+1555933%']]))
        end)

        it("sends exactly once to each of 2,000 recipients while the API answers 10% 429 and 1% 500", function()
            local list = list_of(2000, "+1555934")
            -- 97, prime: a 500 never falls on a 429's turn (every 970th aside)
            set_chaos("every429=10\nevery500=97\nretry_after=0\n")
            local bc = create { text = "Chaos", lists = { list } }
            local done = wait_status(bc.id, "done", 240)
            set_chaos("")
            assert.equal(2000, done.counts.recipients)
            assert.equal(2000, done.counts.sent)
            assert.equal(0, done.counts.failed)
            local by, answered, throttled, failed = calls("+1555934"), 0, 0, 0
            for _, list_ in pairs(by) do
                local ok = 0
                for _, status in ipairs(list_) do
                    if status == 200 then ok = ok + 1 elseif status == 429 then throttled = throttled + 1
                    else failed = failed + 1 end
                end
                assert.equal(1, ok)
                answered = answered + 1
            end
            assert.equal(2000, answered)
            assert.truthy(throttled >= 150, "429 answers: " .. throttled)
            assert.truthy(failed >= 10, "500 answers: " .. failed)
        end)

        it("keeps each worker's calls in flight within telnyx.max_in_flight over all its lanes", function()
            -- max_in_flight 4: each worker runs two lanes of 4, and its gate lets 4 calls run at
            -- once; four churches broadcasting keep every lane busy. Every answer comes 300 ms
            -- after its request is read, so a call holds its place in the gate at least that long:
            -- no 300 ms window sees more requests than 2 workers x 4.
            local DELAY <const>, GATE <const> = 0.3, 4
            reload { telnyx = { max_in_flight = GATE } }
            set_chaos("delay_ms=" .. DELAY * 1000 .. "\n")
            local churches = { church, other, reg:church(srv, "bC", { phoneNumber = "+15559300003" }),
                               reg:church(srv, "bD", { phoneNumber = "+15559300004" }) }
            local made = {}
            for i, c in ipairs(churches) do
                local list = list_of(40, "+1555939" .. i, c)
                made[i] = create({ text = "Gate", lists = { list } }, c)
            end
            for i, c in ipairs(churches) do wait_status(made[i].id, "done", 60, c) end
            set_chaos("")
            reload { telnyx = { max_in_flight = 16 } }
            local times = {}
            for _, r in ipairs(requests()) do
                if r.body.text == "Gate" then times[#times + 1] = r.at end
            end
            table.sort(times)
            assert.equal(160, #times)
            local most, j = 0, 1
            for i = 1, #times do
                while times[i] - times[j] >= DELAY * 0.9 do j = j + 1 end
                most = math.max(most, i - j + 1)
            end
            assert.truthy(most <= 2 * GATE, most .. " calls in flight at once")
            assert.truthy(most > GATE, "only " .. most .. " calls in flight at once: the lanes did not overlap")
        end)

        it("claims a recipient from the due index, never sorting the whole audience", function()
            -- the dispatcher's claim (one per send), planned over a 5,000-person
            -- broadcast made and dropped in one transaction
            local source = server.read_file(server.ROOT .. "/lua/broadcasts/dispatch.lua")
            local claim = source:match("local CLAIM <const> = %[%[(.-)%]%]")
            assert.truthy(claim, "the claim statement of lua/broadcasts/dispatch.lua")
            local plan = q([[BEGIN;
                INSERT INTO contacts (phone_number, consent, consent_source, consent_at)
                SELECT '+1555937' || lpad(i::text, 4, '0'), 'opted_in', 'admin', now() FROM generate_series(1, 5000) i;
                WITH b AS (INSERT INTO broadcasts (status, text, list_ids, send_at, started_at)
                           VALUES ('sending', 'Planned', '{}', now(), now()) RETURNING id)
                INSERT INTO broadcast_recipients (broadcast_id, phone_number, contact_id, time_zone)
                SELECT b.id, c.phone_number, c.id, 'UTC' FROM b, contacts c WHERE c.phone_number LIKE '+1555937%';
                ANALYZE broadcasts; ANALYZE broadcast_recipients;
                PREPARE claim(float8, int) AS ]] .. claim .. [[;
                EXPLAIN EXECUTE claim(60, 8);
                ROLLBACK]])
            assert.truthy(plan:find("Index Scan using broadcast_recipients_due", 1, true), plan)
            assert.is_nil(plan:find("Seq Scan on broadcast_recipients", 1, true), plan)
        end)

        it("leaves the broadcast's row alone when a recipient is claimed or given back", function()
            -- the row's versions (ctid) through claim, release, claim and
            -- sent, in one transaction rolled back: only sent writes it
            local out = q([[BEGIN;
                INSERT INTO contacts (phone_number, consent, consent_source, consent_at)
                VALUES ('+15559380001', 'opted_in', 'admin', now());
                WITH b AS (INSERT INTO broadcasts (status, text, list_ids, send_at, recipients, queued)
                           VALUES ('paused', 'Row kept', '{}', now(), 1, 1) RETURNING id)
                INSERT INTO broadcast_recipients (broadcast_id, phone_number, contact_id, time_zone)
                SELECT b.id, c.phone_number, c.id, 'UTC' FROM b, contacts c WHERE c.phone_number = '+15559380001';
                CREATE TEMP TABLE seen (step text, version text) ON COMMIT DROP;
                INSERT INTO seen SELECT 'made', ctid::text FROM broadcasts WHERE text = 'Row kept';
                UPDATE broadcast_recipients SET state = 'sending' WHERE phone_number = '+15559380001';
                INSERT INTO seen SELECT 'claimed', ctid::text FROM broadcasts WHERE text = 'Row kept';
                UPDATE broadcast_recipients SET state = 'pending' WHERE phone_number = '+15559380001';
                INSERT INTO seen SELECT 'given back', ctid::text FROM broadcasts WHERE text = 'Row kept';
                UPDATE broadcast_recipients SET state = 'sending' WHERE phone_number = '+15559380001';
                INSERT INTO seen SELECT 'claimed again', ctid::text FROM broadcasts WHERE text = 'Row kept';
                UPDATE broadcast_recipients SET state = 'sent' WHERE phone_number = '+15559380001';
                INSERT INTO seen SELECT 'sent', ctid::text FROM broadcasts WHERE text = 'Row kept';
                SELECT (SELECT count(DISTINCT version) FROM seen WHERE step <> 'sent') || ' '
                    || (SELECT count(DISTINCT version) FROM seen) || ' ' || queued || ' ' || sent
                FROM broadcasts WHERE text = 'Row kept';
                ROLLBACK]])
            -- one version until sent, a second one then; the counts right
            assert.equal("1 2 0 1", out:match("%d+ %d+ %d+ %d+"), out)
        end)

        it("counts deliveries from the status webhooks and replies from inbound texts", function()
            local list = list_of(3, "+1555935")
            local bc = create { text = "Counted", lists = { list } }
            wait_status(bc.id, "done", 30)
            local rows = q([[SELECT m.provider_message_id || ' ' || m.to_number FROM broadcast_recipients r
                JOIN messages m ON m.id = r.message_id WHERE r.broadcast_id = ']] .. bc.id .. [[' ORDER BY m.to_number]])
            local ids = {}
            for id, to in rows:gmatch("(%S+) (%S+)") do ids[#ids + 1] = { id, to } end
            assert.equal(3, #ids)
            tx:deliver(srv, telnyx.status("message.finalized", ids[1][1], church.number, "delivered"), function()
                return broadcast(bc.id).counts.delivered == 1
            end, "updated")
            tx:deliver(srv, telnyx.status("message.finalized", ids[2][1], church.number, "delivery_failed"), function()
                return broadcast(bc.id).counts.failed == 1
            end, "updated")
            tx:deliver(srv, telnyx.received("bc-reply-" .. auth.STAMP, ids[3][2], church.number, "Thanks!"), function()
                return broadcast(bc.id).counts.replies == 1
            end)
            local counts = broadcast(bc.id).counts
            assert.same({ recipients = 3, queued = 0, sent = 3, delivered = 1, failed = 1, optedOut = 0, replies = 1 },
                counts)
        end)

        it("starts a scheduled broadcast within 2 s of sendAt", function()
            local list = list_of(1, "+1555936")
            local at = os.time() + 4
            local bc = create { text = "On time", lists = { list }, sendAt = os.date("!%Y-%m-%dT%H:%M:%SZ", at) }
            assert.equal("scheduled", bc.status)
            local done = wait_status(bc.id, "done", 20)
            local started = tonumber(q("SELECT extract(epoch FROM started_at) FROM broadcasts WHERE id = '"
                .. bc.id .. "'"))
            assert.truthy(started >= at and started <= at + 2, "started " .. (started - at) .. " s after sendAt")
            assert.equal(1, done.counts.sent)
        end)
    end)

    describe("with the church's rate", function()
        it("pauses, resumes and cancels mid-run, and skips whoever opted out", function()
            reload { messaging = { rate_per_min = 30 } }
            local list = list_of(20, "+1555937")
            local bc = create { text = "Slow", lists = { list } }
            assert.truthy(server.wait_until(function() return broadcast(bc.id).counts.sent >= 2 end, 20))
            local paused = call("POST", "/api/broadcasts/" .. bc.id .. "/pause").json.broadcast
            assert.equal("paused", paused.status)
            -- a send under way when it paused may still finish; then nothing
            server.wait_until(function() return false end, 3)
            local sent = broadcast(bc.id).counts.sent
            server.wait_until(function() return false end, 4)
            assert.equal(sent, broadcast(bc.id).counts.sent)
            -- opted out while paused: skipped
            q("UPDATE contacts SET consent = 'opted_out', consent_source = 'keyword' WHERE phone_number IN "
                .. "('+15559370019', '+15559370020')")
            assert.equal("sending", call("POST", "/api/broadcasts/" .. bc.id .. "/resume").json.broadcast.status)
            assert.truthy(server.wait_until(function() return broadcast(bc.id).counts.sent >= sent + 2 end, 20))
            local cancelled = call("POST", "/api/broadcasts/" .. bc.id .. "/cancel").json.broadcast
            assert.equal("cancelled", cancelled.status)
            server.wait_until(function() return false end, 4)
            local final = broadcast(bc.id)
            local by = calls("+1555937")
            local called = 0
            for _, statuses in pairs(by) do
                assert.same({ 200 }, statuses)
                called = called + 1
            end
            assert.equal(final.counts.sent, called)
            assert.truthy(called < 18, "called " .. called)
            reload { messaging = { rate_per_min = 0 } }
        end)

        it("holds rate_per_min = 120 in every 60-second window over two workers", function()
            reload { messaging = { rate_per_min = 120 } }
            local list = list_of(135, "+1555938")
            local bc = create { text = "Paced", lists = { list } }
            wait_status(bc.id, "done", 120)
            reload { messaging = { rate_per_min = 0 } }
            local times = {}
            for _, r in ipairs(requests()) do
                if type(r.body.to) == "string" and r.body.to:sub(1, 8) == "+1555938" then times[#times + 1] = r.at end
            end
            table.sort(times)
            assert.equal(135, #times)
            local most, j = 0, 1
            for i = 1, #times do
                while times[i] - times[j] >= 60 do j = j + 1 end
                most = math.max(most, i - j + 1)
            end
            assert.truthy(most <= 120, most .. " calls in one 60-second window")
            assert.truthy(most >= 100, "only " .. most .. " calls in the busiest window")
        end)
    end)

    describe("quiet hours", function()
        it("sends nothing inside a recipient's quiet hours and sends when they end", function()
            -- Honolulu is 5 or 6 hours behind New York: a window around New
            -- York's present hour is quiet there and open in Honolulu
            local ny = q("SELECT to_char(now() AT TIME ZONE 'America/New_York', 'HH24:MI')")
            local ends = q("SELECT to_char(date_trunc('minute', now() AT TIME ZONE 'America/New_York') "
                .. "+ interval '2 minutes', 'HH24:MI')")
            local starts = q("SELECT to_char((now() AT TIME ZONE 'America/New_York') - interval '1 hour', 'HH24:MI')")
            assert.is_string(ny)
            reload { messaging = { quiet_start = starts, quiet_end = ends } }
            local list = q([[INSERT INTO lists (name) VALUES ('quiet') RETURNING id]])
            q([[INSERT INTO contacts (phone_number, consent, consent_source, consent_at) VALUES
                ('+12125550101', 'opted_in', 'admin', now()), ('+18085550101', 'opted_in', 'admin', now());
                INSERT INTO list_members (list_id, contact_id) SELECT ']] .. list .. [[', id FROM contacts
                WHERE phone_number IN ('+12125550101', '+18085550101')]])
            local bc = create { text = "Quiet", lists = { list } }
            assert.truthy(server.wait_until(function() return broadcast(bc.id).counts.sent == 1 end, 20))
            assert.is_nil(calls("+1212555")["+12125550101"])
            assert.same({ 200 }, calls("+1808555")["+18085550101"])
            -- New York's window opens at `ends`, within two minutes
            local done = wait_status(bc.id, "done", 180)
            assert.equal(2, done.counts.sent)
            local sent_at = calls("+1212555")
            assert.same({ 200 }, sent_at["+12125550101"])
            local opened = q("SELECT to_char(now() AT TIME ZONE 'America/New_York', 'HH24:MI')")
            assert.truthy(opened >= ends or ends == "00:00" or ends == "00:01", opened .. " before " .. ends)
            reload { messaging = { quiet_start = "00:00", quiet_end = "00:00" } }
        end)
    end)
end)
