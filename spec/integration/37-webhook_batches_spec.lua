-- Received texts of one church stored in batches (group commit): many at
-- once with duplicates and bad ones among them, a text the database refuses
-- inside a batch, batches whose connections die; with prepared statements
-- on and off; delivery statuses applied in batches too.
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local HOOK <const> = "/api/webhooks/telnyx/messaging"
local AFTER_MS <const> = 8000 -- spool.after_ms: the specs hold locks for a few seconds

-- A server of `workers` workers for the registry reg, its webhooks signed
-- by tx's key; db: the db section of its configuration.
local function start(reg, tx, workers, db)
    return server.start {
        config = { workers = workers, limits = { request_timeout_s = 30 }, db = db,
                   spool = { after_ms = AFTER_MS, replay_interval_s = 1 } },
        env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                STEEPLE_SPOOL_DIR = server.tmpdir() .. "/spool" },
    }
end

-- A response as "status answer" ("200 stored", "400 validation_failed"),
-- or "error ..." when none came.
local function answer_of(res)
    local json = type(res.json) == "table" and res.json or {}
    return res.error and ("error " .. tostring(res.error))
        or (res.status .. " " .. tostring(json.status or (type(json.error) == "table" and json.error.code)))
end

local function together() return 'steeple_webhook_batches_total{written="together"}' end
local function one_by_one() return 'steeple_webhook_batches_total{written="one_by_one"}' end

for _, prepared in ipairs { true, false } do
describe("received texts stored in batches, prepared statements " .. (prepared and "on" or "off"), function()
    local reg, tx, srv, church = nil, nil, nil, nil
    local tag = prepared and "p" or "u"

    local function q(sql) return (psql(url_of(church.db), sql)) end
    local function count(sql) return tonumber(q(sql)) end

    local function spec_of(body)
        return { port = srv.port, method = "POST", path = HOOK, body = body, headers = tx:headers(body), timeout = 30 }
    end

    -- a received text's body: provider id, sender
    local function received(id, from, text)
        return telnyx.received(id, from, church.number, text or ("text " .. id))
    end

    -- Holds the church's messages table for `seconds` (inserts wait).
    local function hold_messages(seconds) pg.hold(url_of(church.db), "messages", seconds) end

    -- steeple's statements waiting for the lock on messages (nothing else
    -- takes a lock there), at least n of them
    local function waiting(n)
        return server.wait_until(function()
            return count([[SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock']]) >= n
        end, 5)
    end

    -- A signed POST made ready (signing takes a while); post() sends it in
    -- the background (curl) and returns a function that gives its answer's
    -- body once it is in.
    local function ready(body)
        local dir = server.tmpdir()
        local out, req = dir .. "/answer", dir .. "/body"
        server.write_file(req, body)
        local h = tx:headers(body)
        local command = string.format("curl -s -X POST -H %s -H %s -H %s --data-binary @%s http://127.0.0.1:%d%s > %s &",
            server.quote("Content-Type: application/json"),
            server.quote("telnyx-timestamp: " .. h["telnyx-timestamp"]),
            server.quote("telnyx-signature-ed25519: " .. h["telnyx-signature-ed25519"]),
            server.quote(req), srv.port, HOOK, server.quote(out))
        return function()
            os.execute(command)
            return function()
                local text = server.read_file(out)
                if text == nil or text == "" then return nil end
                return cjson.decode(text)
            end
        end
    end

    -- The answers to concurrent requests counted per kind of request:
    -- { [kind] = { ["200 stored"] = n, ["400 validation_failed"] = n, ... } }.
    local function tally(results, kinds, names)
        local answers = {}
        for _, name in ipairs(names) do answers[name] = {} end
        for i, res in ipairs(results) do
            local key = answer_of(res)
            answers[kinds[i]][key] = (answers[kinds[i]][key] or 0) + 1
        end
        return answers
    end

    -- Changes srv's configuration and waits until its worker reloaded.
    local function reload(changes)
        for section, values in pairs(changes) do
            for k, v in pairs(values) do srv.config[section][k] = v end
        end
        server.write_config(srv.config, srv.dir)
        local want = select(2, srv:log_text():gsub("scripts reloaded", "")) + 1
        assert.is_true(srv:sighup())
        assert.truthy(server.wait_until(function()
            return select(2, srv:log_text():gsub("scripts reloaded", "")) >= want
        end, 10), "the worker did not reload")
    end

    setup(function()
        reg = auth.registry("wbatch" .. tag)
        tx = telnyx.new()
        srv = start(reg, tx, 1, { prepared_statements = prepared, acquire_timeout_ms = 20000 })
        church = reg:church(srv, "wb" .. tag, { phoneNumber = prepared and "+15559500001" or "+15559500002" })
    end)

    teardown(function()
        if srv then srv:stop() end
        if reg then reg:drop() end
    end)

    before_each(function() srv:mark() end)

    it("stores 500 texts that arrive at once: each good one once, 50 copies of one as duplicates, "
        .. "10 bad ones refused alone", function()
        local specs, kinds = {}, {}
        for i = 1, 440 do -- 100 senders, new and known
            specs[#specs + 1] = spec_of(received("gb-" .. tag .. i, string.format("+1555961%04d", i % 100)))
            kinds[#specs] = "good"
        end
        local copy = received("gb-" .. tag .. "-copy", "+15559619999")
        for _ = 1, 50 do
            specs[#specs + 1] = spec_of(copy)
            kinds[#specs] = "copy"
        end
        for i = 1, 10 do -- no payload.to
            local bad = cjson.decode(received("gb-" .. tag .. "-bad" .. i, "+15559618888"))
            bad.data.payload.to = nil
            specs[#specs + 1] = spec_of(cjson.encode(bad))
            kinds[#specs] = "bad"
        end
        local before = srv:metric(together())
        local answers = tally(http.concurrent(specs, 60), kinds, { "good", "copy", "bad" })
        -- every good one taken on (stored, or spooled on a busy machine), the
        -- copies too (at most one of them stored), the bad ones refused
        for key in pairs(answers.good) do
            assert.truthy(key == "200 stored" or key == "202 spooled", key)
        end
        for key in pairs(answers.copy) do
            assert.truthy(key == "200 stored" or key == "200 duplicate" or key == "202 spooled", key)
        end
        assert.truthy((answers.copy["200 stored"] or 0) <= 1, cjson.encode(answers.copy))
        assert.same({ ["400 validation_failed"] = 10 }, answers.bad)
        -- spooled ones are replayed: in the end each good text once, the copy once
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM messages WHERE provider_message_id LIKE 'gb-" .. tag .. "%'") == 441
        end, 60), "stored: " .. q("SELECT count(*) FROM messages WHERE provider_message_id LIKE 'gb-" .. tag .. "%'"))
        assert.equal(0, count("SELECT count(*) FROM messages WHERE provider_message_id LIKE '%-bad%'"))
        assert.equal(101, count("SELECT count(*) FROM contacts WHERE phone_number LIKE '+1555961%'"))
        assert.equal(101, count([[SELECT count(*) FROM conversations v JOIN contacts c ON c.id = v.contact_id
            WHERE c.phone_number LIKE '+1555961%']]))
        -- the conversations' counters saw every text
        assert.equal(441, count([[SELECT sum(unread_count) FROM conversations v JOIN contacts c ON c.id = v.contact_id
            WHERE c.phone_number LIKE '+1555961%']]))
        local batches = srv:metric(together()) - before
        print(string.format("# %d batches of several texts; answers: %s", batches, cjson.encode(answers)))
        assert.truthy(batches > 0, "no two texts were ever written together")
        assert.same({}, srv:unexpected_errors())
    end)

    it("writes one by one a batch the database refuses for one of its texts: that one fails alone", function()
        -- the church's database refuses one text (as a constraint would); a
        -- text of several words, not a keyword's path
        q([[CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.text = 'a poisoned text' THEN RAISE EXCEPTION 'poisoned text' USING ERRCODE = '22023'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison()]])
        local before = srv:metric(one_by_one())
        local post_first = ready(received("gp-" .. tag .. "-first", "+15559620000"))
        local specs = {}
        for i = 1, 20 do specs[i] = spec_of(received("gp-" .. tag .. i, string.format("+1555962%04d", i))) end
        specs[21] = spec_of(received("gp-" .. tag .. "-poison", "+15559629999", "a poisoned text"))
        hold_messages(3)
        -- a first text waits for the lock: the others arrive meanwhile and
        -- make the next batch, the poisoned one among them
        local first = post_first()
        assert.truthy(waiting(1), "the first text's statement does not wait for the lock")
        local results = http.concurrent(specs, 60)
        for i = 1, 20 do
            assert.equal(200, results[i].status, results[i].body)
            assert.equal("stored", results[i].json.status)
        end
        assert.equal(500, results[21].status, results[21].body)
        assert.truthy(server.wait_until(first, 10), "the first text was never answered")
        assert.equal("stored", first().status)
        assert.equal(21, count("SELECT count(*) FROM messages WHERE provider_message_id LIKE 'gp-" .. tag .. "%'"))
        assert.equal(0, count("SELECT count(*) FROM messages WHERE text = 'a poisoned text'"))
        assert.equal(before + 1, srv:metric(one_by_one()))
        q("DROP TRIGGER refuse_poison ON messages; DROP FUNCTION refuse_poison()")
        assert.same({}, srv:unexpected_errors { "poisoned text" })
    end)

    it("spools the texts of batches whose connections die, and stores each once when replayed", function()
        local post_first = ready(received("gk-" .. tag .. "-first", "+15559630000"))
        local posts = {}
        for i = 1, 10 do posts[i] = ready(received("gk-" .. tag .. i, string.format("+1555963%04d", i))) end
        hold_messages(6)
        local first = post_first()
        assert.truthy(waiting(1), "the first text's statement does not wait for the lock")
        local later = {}
        for i = 1, 10 do later[i] = posts[i]() end
        -- every batch's connection dies while it waits for the lock: the
        -- first one's, then those of the batches the others made meanwhile
        local answers, all = {}, { first, table.unpack(later) }
        local killed = 0
        assert.truthy(server.wait_until(function()
            killed = killed + count([[SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock']])
            for _, answer in ipairs(all) do
                if answer() == nil then return false end
            end
            return true
        end, 15), "a text was never answered")
        for _, answer in ipairs(all) do answers[answer().status] = (answers[answer().status] or 0) + 1 end
        assert.truthy(killed >= 2, killed .. " connections killed")
        assert.same({ spooled = 11 }, answers)
        -- replayed once the lock is gone: each once
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM messages WHERE provider_message_id LIKE 'gk-" .. tag .. "%'") == 11
        end, 30), "the spooled texts were not all stored")
        assert.truthy(server.wait_until(function() return srv:metric("steeple_spool_pending") == 0 end, 30))
        assert.equal(11, count("SELECT count(DISTINCT provider_message_id) FROM messages "
            .. "WHERE provider_message_id LIKE 'gk-" .. tag .. "%'"))
        assert.same({}, srv:unexpected_errors { "terminating connection", "webhook spooled", "spooled webhooks" })
    end)

    it("spools the texts whose batches take longer than spool.after_ms, and stores each once", function()
        reload { spool = { after_ms = 1000 } }
        local post_first = ready(received("gt-" .. tag .. "-first", "+15559640000"))
        local posts = {}
        for i = 1, 10 do posts[i] = ready(received("gt-" .. tag .. i, string.format("+1555964%04d", i))) end
        hold_messages(4)
        local all = { post_first() }
        assert.truthy(waiting(1), "the first text's statement does not wait for the lock")
        for i = 1, 10 do all[#all + 1] = posts[i]() end
        assert.truthy(server.wait_until(function()
            for _, answer in ipairs(all) do
                if answer() == nil then return false end
            end
            return true
        end, 15), "a text was never answered")
        local answers = {}
        for _, answer in ipairs(all) do answers[answer().status] = (answers[answer().status] or 0) + 1 end
        assert.same({ spooled = 11 }, answers)
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM messages WHERE provider_message_id LIKE 'gt-" .. tag .. "%'") == 11
        end, 30), "the spooled texts were not all stored")
        assert.truthy(server.wait_until(function() return srv:metric("steeple_spool_pending") == 0 end, 30))
        reload { spool = { after_ms = AFTER_MS } }
        assert.same({}, srv:unexpected_errors { "spooled" })
    end)

    it("applies delivery statuses that arrive together in batches: each message to its furthest status", function()
        -- 30 outbound messages of one conversation, queued
        q(string.format([[
            WITH c AS (INSERT INTO contacts (phone_number) VALUES ('+15559650000') RETURNING id),
                 v AS (INSERT INTO conversations (contact_id) SELECT id FROM c RETURNING id)
            INSERT INTO messages (conversation_id, direction, from_number, to_number, text, status, provider_message_id)
            SELECT v.id, 'outbound', '%s', '+15559650000', 'hi', 'queued', 'gs-%s-' || i
            FROM v, generate_series(1, 30) AS i]], church.number, tag))
        local function status(event_type, n, value)
            return spec_of(telnyx.status(event_type, "gs-" .. tag .. "-" .. n, church.number, value))
        end
        local final = function(i) return i % 2 == 0 and "delivered" or "delivery_failed" end
        local specs, kinds = {}, {}
        local function add(kind, spec) specs[#specs + 1] = spec; kinds[#specs] = kind end
        for i = 1, 30 do -- sent and final at once, in either order
            if i % 3 == 0 then
                add("known", status("message.finalized", i, final(i)))
                add("known", status("message.sent", i, "sent"))
            else
                add("known", status("message.sent", i, "sent"))
                add("known", status("message.finalized", i, final(i)))
            end
        end
        add("known", status("message.finalized", 4, "delivered")) -- a retried final
        for i = 1, 5 do add("unknown", status("message.sent", "nobody" .. i, "sent")) end
        add("bad", status("message.sent", 5, "bogus"))
        local before = srv:metric(together())
        local post_first = ready(telnyx.status("message.sent", "gs-" .. tag .. "-30", church.number, "sent"))
        hold_messages(3)
        -- the first status waits for the lock; the others arrive meanwhile
        local first = post_first()
        assert.truthy(waiting(1), "the first status's statement does not wait for the lock")
        local answers = tally(http.concurrent(specs, 40), kinds, { "known", "unknown", "bad" })
        assert.truthy(server.wait_until(first, 10), "the first status was never answered")
        assert.equal("updated", first().status)
        assert.same({ ["200 updated"] = 61 }, answers.known)
        assert.same({ ["200 ignored"] = 5 }, answers.unknown)
        assert.same({ ["400 validation_failed"] = 1 }, answers.bad)
        for i = 1, 30 do
            assert.equal(final(i), q("SELECT status FROM messages WHERE provider_message_id = 'gs-" .. tag .. "-" .. i .. "'"))
        end
        assert.truthy(srv:metric(together()) > before, "no two statuses were ever applied together")
        assert.same({}, srv:unexpected_errors())
    end)

    it("finds the conversations of senders the worker does not know, alone and in batches: a contact who has "
        .. "one is not written, one without gets one, a deleted one comes back", function()
        -- per path, three contacts made by SQL (the worker has seen none of
        -- them): one with a conversation, one without (as an import makes
        -- them), one with a conversation and deleted
        local function contacts(prefix)
            q(string.format([[
                INSERT INTO contacts (phone_number, first_name) VALUES ('%s1', 'Has'), ('%s2', 'Lacks'), ('%s3', 'Gone');
                INSERT INTO conversations (contact_id) SELECT id FROM contacts WHERE phone_number IN ('%s1', '%s3');
                UPDATE contacts SET deleted_at = now() WHERE phone_number = '%s3']],
                prefix, prefix, prefix, prefix, prefix, prefix))
            return q(string.format("SELECT xmin FROM contacts WHERE phone_number = '%s1'", prefix)),
                q(string.format([[SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id
                    WHERE c.phone_number = '%s1']], prefix))
        end
        local function check(prefix, xmin, conversation, sent)
            assert.equal(xmin, q(string.format("SELECT xmin FROM contacts WHERE phone_number = '%s1'", prefix)),
                "the contact who has a conversation was written")
            assert.equal(conversation, q(string.format("SELECT conversation_id FROM messages "
                .. "WHERE provider_message_id = 'gf-%s-%s1'", tag, prefix)))
            assert.equal(string.format("1|Has|%d\n1|Lacks|%d\n1|Gone|%d", sent, sent, sent), q(string.format([[
                SELECT count(*), c.first_name, v.unread_count FROM contacts c JOIN conversations v ON v.contact_id = c.id
                WHERE c.phone_number LIKE '%s_' AND c.deleted_at IS NULL
                GROUP BY c.phone_number, c.first_name, v.unread_count ORDER BY c.phone_number]], prefix)))
        end
        -- alone: one text after the other
        local xmin, conversation = contacts("+1555966000")
        for i = 1, 3 do
            local res = tx:post(srv, HOOK, received("gf-" .. tag .. "-+1555966000" .. i, "+1555966000" .. i))
            assert.equal(200, res.status, res.body)
            assert.equal("stored", res.json.status)
        end
        check("+1555966000", xmin, conversation, 1)
        -- in a batch: three texts arrive while a first one waits for a lock
        xmin, conversation = contacts("+1555966100")
        local before = srv:metric(together())
        local post_first = ready(received("gf-" .. tag .. "-first", "+15559661999"))
        local specs = {}
        for i = 1, 3 do specs[i] = spec_of(received("gf-" .. tag .. "-+1555966100" .. i, "+1555966100" .. i)) end
        hold_messages(2)
        local first = post_first()
        assert.truthy(waiting(1), "the first text's statement does not wait for the lock")
        for i, res in ipairs(http.concurrent(specs, 30)) do
            assert.equal(200, res.status, res.body)
            assert.equal("stored", res.json.status, i)
        end
        assert.truthy(server.wait_until(first, 10), "the first text was never answered")
        assert.equal(before + 1, srv:metric(together()))
        check("+1555966100", xmin, conversation, 1)
        -- and again, now that the worker knows them: the messages only
        for i = 1, 3 do
            local res = tx:post(srv, HOOK, received("gf-" .. tag .. "-again" .. i, "+1555966100" .. i))
            assert.equal("stored", res.json.status)
        end
        check("+1555966100", xmin, conversation, 2)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
        srv = nil
    end)
end)
end

-- Two workers write batches of the same church at the same time: whatever
-- order the senders' texts come in, no two batches wait for each other in a
-- circle (a deadlock fails one of them after a second).
describe("received texts of one church written by two workers at once", function()
    local reg, tx, srv, church = nil, nil, nil, nil
    local SENDERS <const> = 40

    local function q(sql) return (psql(url_of(church.db), sql)) end

    setup(function()
        reg = auth.registry("wbatch2")
        tx = telnyx.new()
        srv = start(reg, tx, 2, { acquire_timeout_ms = 20000 })
        church = reg:church(srv, "wbw", { phoneNumber = "+15559500003" })
    end)

    teardown(function()
        if srv then srv:stop() end
        if reg then reg:drop() end
    end)

    it("stores 3 x 400 texts of 40 known senders in random order, each once, none spooled", function()
        q(string.format([[
            WITH c AS (INSERT INTO contacts (phone_number)
                       SELECT '+1555967' || lpad(k::text, 4, '0') FROM generate_series(1, %d) AS k RETURNING id)
            INSERT INTO conversations (contact_id) SELECT id FROM c]], SENDERS))
        local seed = 17
        local function next_sender() -- a fixed pseudo-random sequence
            seed = (seed * 1103515245 + 12345) % 2147483648
            return seed % SENDERS + 1
        end
        local answers = {}
        for round = 1, 3 do
            local specs = {}
            for i = 1, 400 do
                local body = telnyx.received(string.format("gd-%d-%d", round, i),
                    string.format("+1555967%04d", next_sender()), church.number, "text " .. i)
                specs[i] = { port = srv.port, method = "POST", path = HOOK, body = body, headers = tx:headers(body),
                             timeout = 30 }
            end
            for _, res in ipairs(http.concurrent(specs, 60)) do
                local key = answer_of(res)
                answers[key] = (answers[key] or 0) + 1
            end
        end
        assert.same({ ["200 stored"] = 1200 }, answers)
        assert.equal("1200", q("SELECT count(*) FROM messages WHERE provider_message_id LIKE 'gd-%'"))
        assert.equal("1200", q([[SELECT sum(unread_count) FROM conversations v JOIN contacts c ON c.id = v.contact_id
            WHERE c.phone_number LIKE '+1555967%']]))
        assert.truthy(srv:metric('steeple_webhook_batches_total{written="together"}') > 0)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
        srv = nil
    end)
end)
