-- Telnyx webhooks routed to the right church, and the conversations API.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local CHURCHES <const> = 10
local HOOK <const> = "/api/webhooks/telnyx/messaging"

local function phone(i) return string.format("+1555%07d", 2000000 + i) end

describe("messaging", function()
    local reg, tx
    local churches = {} -- i -> { id, token, number, db }
    local srv = suite.server(function()
        reg = auth.registry("msgspec")
        tx = telnyx.new()
        return {
            config = { workers = 2, limits = { request_timeout_s = 30, body_bytes = 4 * 1024 * 1024 },
                       db = { acquire_timeout_ms = 20000 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    STEEPLE_SPOOL_DIR = server.tmpdir() .. "/spool" },
        }
    end, { stop_s = 10, after = function() reg:drop() end })

    local function count(i, sql)
        return tonumber((psql(url_of(churches[i].db), sql)))
    end

    -- A webhook the server took on: stored at once, or spooled (a busy machine)
    local accepted = telnyx.accepted

    -- True once the message with that provider id is in church i's database.
    local function stored(i, provider_id)
        return count(i, "SELECT count(*) FROM messages WHERE provider_message_id = '" .. provider_id .. "'") > 0
    end

    -- Sends a message.received webhook to church i and waits until it is stored.
    local function deliver(i, provider_id, from, text)
        tx:deliver(srv, telnyx.received(provider_id, from, phone(i), text), function() return stored(i, provider_id) end)
    end

    setup(function()
        for i = 1, CHURCHES do
            local res = auth.post(srv, "/api/auth/register", auth.church("msg" .. i, { phoneNumber = phone(i) }))
            assert.equal(201, res.status, res.body)
            churches[i] = { id = res.json.tenantId, token = res.json.accessToken, number = phone(i),
                db = (psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")) }
        end
    end)

    describe("webhooks", function()
        it("stores a received message in the church of payload.to, once", function()
            local body = telnyx.received("pm-one", "+15557770001", phone(1), "Hello church",
                { { url = "https://media.example/a.jpg", content_type = "image/jpeg", size = 1234, hash_sha256 = "ab" } })
            local res = tx:post(srv, HOOK, body)
            assert.truthy(accepted(res), tostring(res.status) .. " " .. tostring(res.body))
            assert.truthy(server.wait_until(function() return stored(1, "pm-one") end, 30), "pm-one was never stored")
            for _ = 1, 4 do
                -- a retry carries another attempt number: same payload.id, other body
                local again = tx:post(srv, "/api/webhooks/telnyx/mms", (body:gsub('"attempt":1', '"attempt":2')))
                assert.truthy(accepted(again, "duplicate") and again.json.status ~= "stored", again.body)
            end
            assert.equal(1, count(1, "SELECT count(*) FROM messages WHERE provider_message_id = 'pm-one'"))
            assert.equal(0, count(2, "SELECT count(*) FROM messages"))
            local convs = auth.get(srv, "/api/conversations", churches[1].token)
            assert.equal(200, convs.status, convs.body)
            assert.equal(1, #convs.json.conversations)
            local c = convs.json.conversations[1]
            assert.equal("+15557770001", c.contactPhone)
            assert.equal("Hello church", c.lastMessagePreview)
            assert.equal(1, c.unreadCount)
            assert.truthy(c.lastMessageAt:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$"), c.lastMessageAt)
            assert.equal(cjson.null, convs.json.nextCursor)
            local msgs = auth.get(srv, "/api/conversations/" .. c.id .. "/messages", churches[1].token)
            assert.equal(200, msgs.status, msgs.body)
            local m = msgs.json.messages[1]
            assert.same({ direction = "inbound", from = "+15557770001", to = phone(1), text = "Hello church",
                media = { { url = "https://media.example/a.jpg", contentType = "image/jpeg" } }, status = "received",
                providerMessageId = "pm-one" },
                { direction = m.direction, from = m.from, to = m.to, text = m.text, media = m.media,
                  status = m.status, providerMessageId = m.providerMessageId })
            -- the first page marked it read
            assert.equal(0, auth.get(srv, "/api/conversations", churches[1].token).json.conversations[1].unreadCount)
            assert.same({}, srv:unexpected_errors())
        end)

        it("refuses bad signatures and stores nothing", function()
            local body = telnyx.received("pm-bad", "+15557770002", phone(2))
            local good = tx:headers(body)
            local cases = {
                missing = { ["Content-Type"] = "application/json" },
                wrong = { ["Content-Type"] = "application/json", ["telnyx-timestamp"] = good["telnyx-timestamp"],
                    ["telnyx-signature-ed25519"] = tx:sign("something else") },
                other_body = tx:headers(telnyx.received("pm-other", "+15557770002", phone(2))),
                old = tx:headers(body, os.time() - 400),
                future = tx:headers(body, os.time() + 400),
                garbage = { ["Content-Type"] = "application/json", ["telnyx-timestamp"] = good["telnyx-timestamp"],
                    ["telnyx-signature-ed25519"] = "not base64!" },
                other_key = telnyx.new():headers(body),
            }
            for name, headers in pairs(cases) do
                local res = tx:post(srv, HOOK, body, headers)
                assert.equal(401, res.status, name)
                assert.equal("invalid_signature", res.json.error.code)
            end
            assert.equal(0, count(2, "SELECT count(*) FROM messages"))
        end)

        it("lands 200 concurrent webhooks over 10 churches, each in the right one, once", function()
            local specs, n = {}, 0
            for i = 1, CHURCHES do
                for k = 1, 20 do
                    n = n + 1
                    local body = telnyx.received(string.format("pm-many-%d-%d", i, k), string.format("+1555888%04d", k),
                        phone(i), "message " .. k)
                    specs[n] = { port = srv.port, method = "POST", path = HOOK, body = body, timeout = 60,
                        headers = tx:headers(body) }
                end
            end
            -- the contract: each is stored (200) or, when its database work
            -- took longer than spool.after_ms, spooled (202) and stored later
            for idx, res in ipairs(http.concurrent(specs)) do
                assert.truthy(accepted(res), idx .. ": " .. tostring(res.status) .. " " .. tostring(res.body or res.error))
            end
            assert.truthy(server.wait_until(function()
                for i = 1, CHURCHES do
                    if count(i, "SELECT count(*) FROM messages WHERE provider_message_id LIKE 'pm-many-" .. i .. "-%'") < 20 then
                        return false
                    end
                end
                return true
            end, 60), "not every acknowledged webhook was stored")
            for i = 1, CHURCHES do
                assert.equal(20, count(i, "SELECT count(*) FROM messages WHERE provider_message_id LIKE 'pm-many-" .. i .. "-%'"))
                assert.equal(0, count(i, "SELECT count(*) FROM messages WHERE provider_message_id LIKE 'pm-many-%' "
                    .. "AND provider_message_id NOT LIKE 'pm-many-" .. i .. "-%'"))
            end
            assert.same({}, srv:unexpected_errors())
        end)

        it("updates outbound messages, never backwards, and ignores unknown ones", function()
            local db3 = url_of(churches[3].db)
            psql(db3, [[
                WITH c AS (INSERT INTO contacts (phone_number) VALUES ('+15550009999') RETURNING id),
                     v AS (INSERT INTO conversations (contact_id) SELECT id FROM c RETURNING id)
                INSERT INTO messages (conversation_id, direction, from_number, to_number, text, status, provider_message_id)
                SELECT id, 'outbound', ']] .. phone(3) .. [[', '+15550009999', 'hi', 'queued', 'pm-out' FROM v]])
            -- applied at once (200 updated) or spooled and applied by a later replay
            local function send(event_type, status)
                local replays = srv:log_count("spooled webhooks applied")
                local res = tx:post(srv, HOOK, telnyx.status(event_type, "pm-out", phone(3), status))
                assert.truthy(accepted(res, "updated") and res.json.status ~= "stored", res.body)
                if res.json.status == "spooled" then
                    assert.truthy(server.wait_until(function()
                        return srv:log_count("spooled webhooks applied") > replays
                    end, 30), "the spooled event was never applied")
                end
            end
            send("message.sent", "sent")
            assert.equal("sent", psql(db3, "SELECT status FROM messages WHERE provider_message_id = 'pm-out'"))
            send("message.finalized", "delivered")
            send("message.sent", "sent") -- late: changes nothing
            assert.equal("delivered", psql(db3, "SELECT status FROM messages WHERE provider_message_id = 'pm-out'"))
            local res = tx:post(srv, HOOK, telnyx.status("message.sent", "pm-nobody", phone(3), "sent"))
            assert.same({ status = "ignored" }, res.json)
        end)

        it("keeps events for unknown numbers as dead letters and ignores other types", function()
            local body = telnyx.received("pm-lost", "+15557770003", "+15559999999")
            local function dead_letters()
                return psql(reg.url, "SELECT count(*) FROM dead_letters WHERE phone_number = '+15559999999'")
            end
            -- unroutable, or spooled (a slow registry) and kept by a later replay
            for _ = 1, 2 do
                local res = tx:post(srv, HOOK, body)
                assert.equal(202, res.status)
                assert.truthy(res.json.status == "unroutable" or res.json.status == "spooled", res.body)
                assert.truthy(server.wait_until(function() return dead_letters() == "1" end, 30),
                    "no dead letter was kept")
            end
            assert.equal("1", dead_letters())
            local other = '{"data":{"id":"ev-x","event_type":"call.initiated","payload":{}},"meta":{}}'
            local res = tx:post(srv, HOOK, other)
            assert.equal(200, res.status)
            assert.same({ status = "ignored" }, res.json)
        end)

        it("refuses bad bodies after the signature, with a clear 4xx", function()
            local function check(body, status, code)
                local res = tx:post(srv, HOOK, body)
                assert.equal(status, res.status, body:sub(1, 80))
                assert.equal(code, res.json.error.code)
                return res.json.error.fields
            end
            check("not json", 400, "invalid_json")
            check("[1,2]", 400, "invalid_json")
            check('{"meta":{}}', 400, "validation_failed")
            local base = cjson.decode(telnyx.received("pm-shape", "+15557770004", phone(4)))
            local function variant(change)
                local t = cjson.decode(cjson.encode(base))
                change(t.data.payload)
                return cjson.encode(t)
            end
            assert.truthy(check(variant(function(p) p.to = {} end), 400, "validation_failed")["data.payload.to"])
            assert.truthy(check(variant(function(p) p.to = "+15551234567" end), 400, "validation_failed")["data.payload.to"])
            assert.truthy(check(variant(function(p) p.from.phone_number = "+1555abc1234" end), 400,
                "validation_failed")["data.payload.from"])
            local media = {}
            for i = 1, 10000 do media[i] = { url = "https://m.example/" .. i } end
            assert.truthy(check(variant(function(p) p.media = media end), 400, "validation_failed")["data.payload.media"])
            -- a 2 MB text (this server takes bodies up to 4 MiB): verified, then refused
            assert.truthy(check(variant(function(p) p.text = ("x"):rep(2 * 1024 * 1024) end), 400,
                "validation_failed")["data.payload.text"])
            assert.equal(0, count(4, "SELECT count(*) FROM messages WHERE provider_message_id = 'pm-shape'"))
        end)
    end)

    describe("conversations", function()
        local token, ids = nil, {}

        setup(function()
            -- a church of its own: its conversations are only these
            local res = auth.post(srv, "/api/auth/register", auth.church("msgpages", { phoneNumber = phone(50) }))
            assert.equal(201, res.status, res.body)
            token = res.json.accessToken
            churches[50] = { id = res.json.tenantId, token = token, number = phone(50),
                db = (psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")) }
            for k = 1, 5 do
                deliver(50, "pm-page-" .. k, string.format("+1555666%04d", k), "text " .. k)
            end
        end)

        it("pages newest first with a cursor, stable under inserts", function()
            local seen, cursor, pages = {}, nil, 0
            repeat
                local res = auth.get(srv, "/api/conversations?limit=2" .. (cursor and ("&cursor=" .. cursor) or ""), token)
                assert.equal(200, res.status, res.body)
                pages = pages + 1
                for _, c in ipairs(res.json.conversations) do
                    assert.is_nil(seen[c.contactPhone], "seen twice: " .. c.contactPhone)
                    seen[c.contactPhone] = true
                    ids[#ids + 1] = c.id
                end
                if pages == 1 then
                    -- a new conversation arrives between pages: it does not shift the pages after
                    deliver(50, "pm-page-new", "+15556669999", "new")
                    assert.equal("+15556660005", res.json.conversations[1].contactPhone)
                end
                cursor = res.json.nextCursor ~= cjson.null and res.json.nextCursor or nil
            until cursor == nil
            assert.equal(3, pages)
            for k = 1, 5 do assert.truthy(seen[string.format("+1555666%04d", k)]) end
            assert.is_nil(seen["+15556669999"])
        end)

        it("gives the last page a null cursor, a full one included", function()
            local function page(path, limit, cursor)
                local res = auth.get(srv, path .. "?limit=" .. limit .. (cursor and ("&cursor=" .. cursor) or ""), token)
                assert.equal(200, res.status, res.body)
                return res.json
            end
            -- a conversation with three messages
            for k = 1, 2 do deliver(50, "pm-last-" .. k, "+15556660001", "more " .. k) end
            local all = page("/api/conversations", 100).conversations
            local n = #all
            assert.truthy(n >= 2, "too few conversations to page")
            -- exactly limit rows and nothing after them
            local exact = page("/api/conversations", n)
            assert.equal(n, #exact.conversations)
            assert.equal(cjson.null, exact.nextCursor)
            -- one row more than the limit: a cursor, then one row and no cursor
            local first = page("/api/conversations", n - 1)
            assert.equal(n - 1, #first.conversations)
            assert.is_string(first.nextCursor)
            local rest = page("/api/conversations", n - 1, first.nextCursor)
            assert.equal(1, #rest.conversations)
            assert.equal(all[n].id, rest.conversations[1].id)
            assert.equal(cjson.null, rest.nextCursor)

            -- the same for a conversation's messages
            assert.equal("+15556660001", all[1].contactPhone)
            local path = "/api/conversations/" .. all[1].id .. "/messages"
            local msgs = page(path, 100).messages
            local m = #msgs
            assert.equal(3, m)
            assert.equal(cjson.null, page(path, m).nextCursor)
            local mfirst = page(path, m - 1)
            assert.equal(m - 1, #mfirst.messages)
            assert.is_string(mfirst.nextCursor)
            local mrest = page(path, m - 1, mfirst.nextCursor)
            assert.equal(1, #mrest.messages)
            assert.equal(msgs[m].id, mrest.messages[1].id)
            assert.equal(cjson.null, mrest.nextCursor)
            assert.same({}, srv:unexpected_errors())
        end)

        it("reads a page of a long conversation from its index, not the whole conversation", function()
            -- a church of its own: no other reads of its index are reported meanwhile
            local reg_res = auth.post(srv, "/api/auth/register", auth.church("msglong", { phoneNumber = phone(51) }))
            assert.equal(201, reg_res.status, reg_res.body)
            local own = reg_res.json.accessToken
            local long_db = url_of((psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. reg_res.json.tenantId .. "'")))
            local id = psql(long_db, [[
                WITH c AS (INSERT INTO contacts (phone_number) VALUES ('+15556667777') RETURNING id),
                     v AS (INSERT INTO conversations (contact_id) SELECT id FROM c RETURNING id),
                     m AS (INSERT INTO messages (conversation_id, direction, from_number, to_number, text, status,
                                                 created_at)
                           SELECT v.id, 'inbound', '+15556667777', ']] .. phone(51) .. [[', 'long ' || i, 'received',
                                  now() - make_interval(secs => i)
                           FROM v, generate_series(1, 3000) AS i)
                SELECT id FROM v]])
            psql(long_db, "ANALYZE messages") -- as autovacuum does after so many inserts
            -- rows of messages read, through an index or a scan, as the
            -- server's sessions report them (they flush their counts within
            -- seconds of going idle)
            local function entries_read()
                return tonumber((psql(long_db, "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) "
                    .. "FROM pg_stat_user_tables WHERE relname = 'messages'")))
            end
            local before = entries_read()
            local res = auth.get(srv, "/api/conversations/" .. id .. "/messages?limit=50", own)
            assert.equal(200, res.status, res.body)
            assert.equal(50, #res.json.messages)
            for k = 1, 50 do assert.equal("long " .. k, res.json.messages[k].text) end -- newest first
            local read
            assert.truthy(server.wait_until(function()
                read = entries_read() - before
                return read >= 51
            end, 30), "the server's reads were never reported")
            -- the page's 51 rows, not the conversation's 3,000
            assert.truthy(read <= 500, read .. " rows read for a page of 50")
            local nxt = auth.get(srv, "/api/conversations/" .. id .. "/messages?limit=50&cursor=" .. res.json.nextCursor,
                own)
            assert.equal(200, nxt.status, nxt.body)
            assert.equal("long 51", nxt.json.messages[1].text)
            assert.equal("long 100", nxt.json.messages[50].text)
        end)

        it("refuses bad paging and unknown conversations", function()
            for _, q in ipairs { "limit=0", "limit=101", "limit=abc", "limit=1.5", "cursor=%%%", "cursor=bm9wZQ" } do
                local res = auth.get(srv, "/api/conversations?" .. q, token)
                assert.equal(400, res.status, q)
                assert.equal("validation_failed", res.json.error.code)
            end
            assert.equal(404, auth.get(srv, "/api/conversations/not-a-uuid/messages", token).status)
            assert.equal(404, auth.get(srv, "/api/conversations/00000000-0000-4000-8000-000000000000/messages", token).status)
            -- another church's conversation is not found
            assert.equal(404, auth.get(srv, "/api/conversations/" .. ids[1] .. "/messages", churches[6].token).status)
            assert.equal(401, auth.get(srv, "/api/conversations").status)
        end)
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
