-- Contacts (Bearer): create, read, change, delete and re-create, consent
-- and its history, keyset pages and filters, isolation between churches,
-- the opted-out rule of conversation messages, and PATCH /api/church.
local server = require "support.server"
local suite = require "support.suite"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local secrets = require "support.secrets"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local OTHER_ID <const> = "00000000-0000-4000-8000-000000000000"

describe("contacts", function()
    local reg, tx
    local church, other -- { id, token, db, number }
    local srv = suite.server(function()
        reg = auth.registry("contactspec")
        tx = telnyx.new()
        return {
            config = { workers = 1, limits = { request_timeout_s = 30 }, db = { acquire_timeout_ms = 20000 },
                       telnyx = { send_attempts = 1 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    STEEPLE_SPOOL_DIR = server.tmpdir() .. "/spool",
                    -- outbound sends are refused at once: nothing listens there
                    TELNYX_API_BASE = "http://127.0.0.1:" .. server.free_port() },
        }
    end, { stop_s = 10, after = function() reg:drop() end })

    local function call(method, path, token, body)
        return auth.call(srv, method, path, token, body)
    end

    local function sql(c, text)
        return (psql(url_of(c.db), text))
    end

    local function register(name, number)
        return reg:church(srv, name, { phoneNumber = number })
    end

    local function create(c, body)
        local res = call("POST", "/api/contacts", c.token, body)
        assert.equal(201, res.status, res.body)
        return res.json.contact
    end

    local function new_list(c, name)
        local res = call("POST", "/api/lists", c.token, { name = name })
        assert.equal(201, res.status, res.body)
        return res.json.list
    end

    local fields = auth.fields

    local function field_names(res)
        local names = {}
        for name in pairs(fields(res)) do names[#names + 1] = name end
        table.sort(names)
        return names
    end

    setup(function()
        church = register("contacts1", "+15554100001")
        other = register("contacts2", "+15554100002")
    end)

    it("creates, reads, changes and deletes a contact, with its consent history", function()
        local youth, choir = new_list(church, "Youth"), new_list(church, "Choir")
        local c = create(church, { phoneNumber = "+15554200001", firstName = "  Ruth ", lastName = "Miller",
            lists = { youth.id, youth.id }, consent = "opted_in" })
        assert.same({ "+15554200001", "Ruth", "Miller", "opted_in", "admin", { youth.id } },
            { c.phoneNumber, c.firstName, c.lastName, c.consent, c.consentSource, c.lists })
        for _, t in ipairs { c.consentAt, c.createdAt, c.updatedAt } do
            assert.truthy(t:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$"), t)
        end
        local got = call("GET", "/api/contacts/" .. c.id, church.token)
        assert.equal(200, got.status, got.body)
        assert.same(c, got.json.contact)
        -- names: null clears one, absent keeps it; lists replaces the memberships
        local res = call("PATCH", "/api/contacts/" .. c.id, church.token, { firstName = cjson.null, lists = { choir.id } })
        assert.equal(200, res.status, res.body)
        assert.same({ cjson.null, "Miller", { choir.id }, "opted_in" },
            { res.json.contact.firstName, res.json.contact.lastName, res.json.contact.lists, res.json.contact.consent })
        assert.equal(0, call("GET", "/api/lists/" .. youth.id, church.token).json.list.memberCount)
        assert.equal(1, call("GET", "/api/lists/" .. choir.id, church.token).json.list.memberCount)
        -- opting in again changes nothing and records nothing
        res = call("PATCH", "/api/contacts/" .. c.id, church.token, { consent = "opted_in", lists = {} })
        assert.equal(200, res.status, res.body)
        assert.same({}, res.json.contact.lists)
        local events = call("GET", "/api/contacts/" .. c.id .. "/consent", church.token)
        assert.equal(200, events.status, events.body)
        assert.equal(1, #events.json.events)
        local e = events.json.events[1]
        assert.same({ "unknown", "opted_in", "admin", cjson.null }, { e.from, e.to, e.source, e.messageId })
        assert.equal(204, call("DELETE", "/api/contacts/" .. c.id, church.token).status)
        for _, path in ipairs { "/api/contacts/" .. c.id, "/api/contacts/" .. c.id .. "/consent" } do
            assert.equal("not_found", call("GET", path, church.token).json.error.code)
        end
        assert.equal(404, call("DELETE", "/api/contacts/" .. c.id, church.token).status)
        assert.equal(404, call("PATCH", "/api/contacts/" .. c.id, church.token, { firstName = "X" }).status)
        -- the row stays, without names, memberships or consent
        assert.equal("t|||unknown|0", sql(church, "SELECT deleted_at IS NOT NULL, first_name, last_name, consent, "
            .. "(SELECT count(*) FROM list_members WHERE contact_id = id) FROM contacts WHERE id = '" .. c.id .. "'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("brings a deleted contact back on POST, and its number's history with it", function()
        local c = create(church, { phoneNumber = "+15554200002", firstName = "Anna", consent = "opted_in" })
        assert.equal(204, call("DELETE", "/api/contacts/" .. c.id, church.token).status)
        local again = create(church, { phoneNumber = "+15554200002", lastName = "Berg" })
        assert.equal(c.id, again.id)
        assert.same({ cjson.null, "Berg", "unknown", cjson.null, cjson.null },
            { again.firstName, again.lastName, again.consent, again.consentSource, again.consentAt })
        assert.truthy(again.createdAt > c.createdAt, again.createdAt .. " " .. c.createdAt)
        local events = call("GET", "/api/contacts/" .. again.id .. "/consent", church.token).json.events
        assert.same({ { "unknown", "opted_in" }, { "opted_in", "unknown" } },
            { { events[1].from, events[1].to }, { events[2].from, events[2].to } })
        assert.equal(2, #events)
        -- the same number once more: 409, nothing changed
        local res = call("POST", "/api/contacts", church.token, { phoneNumber = "+15554200002", firstName = "Other" })
        assert.equal(409, res.status, res.body)
        assert.equal("contact_exists", res.json.error.code)
        assert.equal("Berg", call("GET", "/api/contacts/" .. c.id, church.token).json.contact.lastName)
        assert.same({}, srv:unexpected_errors())
    end)

    it("never overrides an opt-out: 409 opted_out, and deleting keeps it", function()
        local c = create(church, { phoneNumber = "+15554200003", firstName = "Stop" })
        -- the number texted STOP
        sql(church, "INSERT INTO suppressions (phone_number, source) VALUES ('+15554200003', 'keyword'); "
            .. "UPDATE contacts SET consent = 'opted_out', consent_source = 'keyword', consent_at = now() "
            .. "WHERE id = '" .. c.id .. "'")
        local res = call("PATCH", "/api/contacts/" .. c.id, church.token, { consent = "opted_in", firstName = "New" })
        assert.equal(409, res.status, res.body)
        assert.equal("opted_out", res.json.error.code)
        local now = call("GET", "/api/contacts/" .. c.id, church.token).json.contact
        assert.same({ "Stop", "opted_out", "keyword" }, { now.firstName, now.consent, now.consentSource })
        assert.equal(204, call("DELETE", "/api/contacts/" .. c.id, church.token).status)
        assert.equal("opted_out|keyword", sql(church, "SELECT consent, consent_source FROM contacts WHERE id = '"
            .. c.id .. "'"))
        -- opting a suppressed number in creates nothing
        res = call("POST", "/api/contacts", church.token, { phoneNumber = "+15554200003", consent = "opted_in" })
        assert.equal(409, res.status, res.body)
        assert.equal("opted_out", res.json.error.code)
        assert.equal("t", sql(church, "SELECT deleted_at IS NOT NULL FROM contacts WHERE id = '" .. c.id .. "'"))
        -- without consent it comes back, still opted out
        local back = create(church, { phoneNumber = "+15554200003" })
        assert.same({ c.id, "opted_out", "keyword" }, { back.id, back.consent, back.consentSource })
        -- a suppressed number never seen as a contact starts opted_out too
        sql(church, "INSERT INTO suppressions (phone_number, source) VALUES ('+15554200004', 'carrier')")
        res = call("POST", "/api/contacts", church.token, { phoneNumber = "+15554200004", consent = "opted_in" })
        assert.equal("opted_out", res.json.error.code)
        assert.equal("0", sql(church, "SELECT count(*) FROM contacts WHERE phone_number = '+15554200004'"))
        local fresh = create(church, { phoneNumber = "+15554200004" })
        assert.same({ "opted_out", "carrier" }, { fresh.consent, fresh.consentSource })
        assert.equal("0", sql(church, "SELECT count(*) FROM consent_events WHERE phone_number = '+15554200004'"))
        -- a contact's own opt-out stands through delete and re-create, even without a suppression
        local own = create(church, { phoneNumber = "+15554200005" })
        sql(church, "UPDATE contacts SET consent = 'opted_out', consent_source = 'carrier', consent_at = now() "
            .. "WHERE id = '" .. own.id .. "'")
        assert.equal(204, call("DELETE", "/api/contacts/" .. own.id, church.token).status)
        res = call("POST", "/api/contacts", church.token, { phoneNumber = "+15554200005", consent = "opted_in" })
        assert.equal("opted_out", res.json.error.code)
        local kept = create(church, { phoneNumber = "+15554200005", firstName = "Kept" })
        assert.same({ own.id, "opted_out", "carrier", "Kept" }, { kept.id, kept.consent, kept.consentSource, kept.firstName })
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses bad input, naming every bad field at once", function()
        local huge = ("n"):rep(10000)
        local res = call("POST", "/api/contacts", church.token, { phoneNumber = "555", firstName = huge,
            lastName = huge, lists = "not a list", consent = "opted_out" })
        assert.same({ "consent", "firstName", "lastName", "lists", "phoneNumber" }, field_names(res))
        assert.same({ "consent" }, field_names(call("POST", "/api/contacts", church.token,
            { phoneNumber = "+15554200009", consent = "unknown" })))
        assert.same({ "phoneNumber" }, field_names(call("POST", "/api/contacts", church.token, {})))
        assert.same({ "firstName" }, field_names(call("POST", "/api/contacts", church.token,
            { phoneNumber = "+15554200009", firstName = ("é"):rep(101) })))
        -- list ids: malformed, unknown, another church's, too many
        local theirs = new_list(other, "Theirs")
        for _, lists in ipairs { { "nope" }, { OTHER_ID }, { theirs.id }, { { id = theirs.id } }, { a = 1 } } do
            assert.same({ "lists" }, field_names(call("POST", "/api/contacts", church.token,
                { phoneNumber = "+15554200009", lists = lists })), cjson.encode(lists))
        end
        local many = {}
        for i = 1, 101 do many[i] = string.format("00000000-0000-4000-8000-%012d", i) end
        assert.same({ "lists" }, field_names(call("POST", "/api/contacts", church.token,
            { phoneNumber = "+15554200009", lists = many })))
        assert.equal("0", sql(church, "SELECT count(*) FROM contacts WHERE phone_number = '+15554200009'"))
        local c = create(church, { phoneNumber = "+15554200009" })
        res = call("PATCH", "/api/contacts/" .. c.id, church.token, { firstName = huge, lists = { theirs.id },
            consent = "opted_out" })
        assert.same({ "consent", "firstName" }, field_names(res))
        assert.same({ "lists" }, field_names(call("PATCH", "/api/contacts/" .. c.id, church.token, { lists = { theirs.id } })))
        assert.equal("invalid_json", call("POST", "/api/contacts", church.token, "[1]").json.error.code)
        assert.equal("invalid_json", call("PATCH", "/api/contacts/" .. c.id, church.token, "nope").json.error.code)
        assert.same({}, srv:unexpected_errors())
    end)

    describe("pages and filters", function()
        local pager, list, added = nil, nil, {}

        setup(function()
            pager = register("contacts3", "+15554100003")
            list = new_list(pager, "Ushers")
            local people = {
                { "+15553010001", "Ruth", "Miller" }, { "+15553010002", "ruthie", "Adams" },
                { "+15553020003", "Mark", "Ruthven" }, { "+15553020004", "Anna", "Miller" },
                { "+15553030005", "100%", "Under_score" }, { "+15553030006", "Ruth", "Baker" },
                { "+445553030007", "Zoe", "Lane" },
            }
            for i, p in ipairs(people) do
                added[i] = create(pager, { phoneNumber = p[1], firstName = p[2], lastName = p[3],
                    lists = i % 2 == 1 and { list.id } or nil, consent = i <= 2 and "opted_in" or nil })
            end
        end)

        local function page(query)
            local res = call("GET", "/api/contacts" .. query, pager.token)
            assert.equal(200, res.status, res.body)
            return res.json
        end

        -- The phone numbers of every contact matching query, over all pages.
        local function numbers(query)
            local out, cursor = {}, nil
            repeat
                local sep = query == "" and "?" or "&"
                local p = page(query .. (cursor and (sep .. "cursor=" .. cursor) or ""))
                for _, c in ipairs(p.contacts) do out[#out + 1] = c.phoneNumber end
                cursor = p.nextCursor ~= cjson.null and p.nextCursor or nil
            until cursor == nil
            return out
        end

        it("pages oldest first over more than two pages, the last one with a null cursor", function()
            local seen, order, cursor, pages = {}, {}, nil, 0
            repeat
                local p = page("?limit=2" .. (cursor and ("&cursor=" .. cursor) or ""))
                pages = pages + 1
                for _, c in ipairs(p.contacts) do
                    assert.is_nil(seen[c.id], "seen twice")
                    order[#order + 1] = c.phoneNumber
                    seen[c.id] = true
                end
                if pages == 1 then
                    -- deleting a row of a page already read shifts nothing
                    assert.equal(204, call("DELETE", "/api/contacts/" .. p.contacts[1].id, pager.token).status)
                end
                cursor = p.nextCursor ~= cjson.null and p.nextCursor or nil
            until cursor == nil
            assert.equal(4, pages)
            assert.equal(7, #order)
            for i, c in ipairs(added) do assert.equal(c.phoneNumber, order[i]) end
            -- exactly limit rows left: no cursor
            local full = page("?limit=6")
            assert.equal(6, #full.contacts)
            assert.equal(cjson.null, full.nextCursor)
            create(pager, { phoneNumber = added[1].phoneNumber, firstName = "Ruth", lastName = "Miller",
                lists = { list.id }, consent = "opted_in" })
        end)

        it("finds by number prefix, name prefix (any case), list and consent", function()
            assert.same({ "+15553010002", "+15553020003", "+15553020004", "+15553030005", "+15553030006",
                "+15553010001" }, numbers("?q=%2B1555"))
            assert.same({ "+15553020003", "+15553020004" }, numbers("?q=1555302"))
            assert.same({ "+15553020003", "+15553020004" }, numbers("?q=555302")) -- taken as +1
            assert.same({ "+445553030007" }, numbers("?q=44"))
            assert.same({ "+15553010002", "+15553020003", "+15553030006", "+15553010001" }, numbers("?q=RUTH"))
            assert.same({ "+15553020003" }, numbers("?q=ruthv"))
            assert.same({ "+15553020004", "+15553010001" }, numbers("?q=mil"))
            assert.same({ "+15553010001" }, numbers("?q=ruth%20mi"))
            assert.same({ "+15553030005" }, numbers("?q=100%25"))
            assert.same({}, numbers("?q=%25"))   -- % is a character, not a wildcard
            assert.same({}, numbers("?q=under%5F%5F")) -- so is _
            assert.same({ "+15553030005" }, numbers("?q=under_"))
            assert.same({ "+15553020003", "+15553030005", "+445553030007", "+15553010001" },
                numbers("?list=" .. list.id))
            assert.same({ "+15553010002", "+15553010001" }, numbers("?consent=opted_in"))
            assert.same({ "+15553010001" }, numbers("?consent=opted_in&list=" .. list.id .. "&q=ru&limit=1"))
            assert.same({}, numbers("?consent=opted_out"))
            assert.equal(7, #numbers("?q=%20%20"))
        end)

        it("matches a backslash in q as itself", function()
            local c = create(pager, { phoneNumber = "+15553040008", firstName = [[Back\slash]], lastName = "Case" })
            assert.same({ "+15553040008" }, numbers("?q=back%5C"))
            assert.same({ "+15553040008" }, numbers("?q=BACK%5Cs"))
            assert.same({}, numbers("?q=back%5C%5C"))
            assert.same({}, numbers("?q=back%5C_"))
            assert.same({}, numbers("?q=back_"))
            assert.equal(204, call("DELETE", "/api/contacts/" .. c.id, pager.token).status)
            assert.same({}, srv:unexpected_errors())
        end)

        it("uses the prefix indexes for q, on 100,000 contacts", function()
            -- the shape of the search's condition, over as many rows as a large church has: a
            -- prefix that matches few names or none is read from the prefix indexes, not by
            -- walking the contacts in page order
            local plans = sql(pager, "BEGIN; INSERT INTO contacts (phone_number, first_name, last_name, created_at) "
                .. "SELECT '+1666' || n, 'First' || n, 'Last' || n, now() - make_interval(secs => 100000 - n) "
                .. "FROM generate_series(1, 100000) n; ANALYZE contacts; "
                .. "PREPARE q(text, text) AS SELECT id FROM contacts c WHERE c.deleted_at IS NULL "
                .. "AND (c.phone_number LIKE $1 OR lower(c.first_name) LIKE lower($2) || '%' "
                .. "OR lower(c.last_name) LIKE lower($2) || '%') ORDER BY c.created_at, c.id LIMIT 51; "
                .. "EXPLAIN EXECUTE q('+1555%', 'Ru'); SELECT '--'; "
                .. "EXPLAIN EXECUTE q('+1555%', 'First123'); SELECT '--'; "
                .. "EXPLAIN EXECUTE q('+1555%', 'Nobody'); ROLLBACK")
            for plan in (plans .. "\n--"):gmatch("(.-)\n%-%-") do
                for _, index in ipairs { "contacts_first_name_prefix", "contacts_last_name_prefix" } do
                    assert.truthy(plan:find("Index Scan on " .. index, 1, true), plan)
                end
                -- the number: its prefix index, or the unique one where the collation allows
                assert.truthy(plan:find("Index Cond: ((phone_number ~>=~ '+1555'::text)", 1, true)
                    or plan:find("Index Cond: ((phone_number >= '+1555'::text)", 1, true), plan)
                assert.is_nil(plan:find("contacts_created", 1, true), plan)
                assert.is_nil(plan:find("Seq Scan", 1, true), plan)
            end
        end)

        it("refuses bad paging and filters", function()
            local theirs = new_list(other, "Not yours")
            local bad = { "limit=0", "limit=101", "limit=x", "cursor=%%%", "cursor=bm9wZQ", "consent=maybe",
                "consent=", "list=nope", "list=" .. OTHER_ID, "list=" .. theirs.id, "q=" .. ("a"):rep(101) }
            for _, q in ipairs(bad) do
                local res = call("GET", "/api/contacts?" .. q, pager.token)
                assert.equal(400, res.status, q)
                assert.equal("validation_failed", res.json.error.code, q)
            end
            assert.same({ "consent", "limit", "list" },
                field_names(call("GET", "/api/contacts?limit=0&consent=x&list=y", pager.token)))
            assert.equal(401, call("GET", "/api/contacts").status)
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    it("keeps each church's contacts to itself: another church's or malformed ids are 404", function()
        local mine = create(church, { phoneNumber = "+15554200020", firstName = "Mine" })
        local theirs = create(other, { phoneNumber = "+15554200020", firstName = "Theirs" })
        assert.not_equal(mine.id, theirs.id)
        for _, id in ipairs { theirs.id, "not-an-id", OTHER_ID, theirs.id .. "0" } do
            local base = "/api/contacts/" .. id
            assert.equal("not_found", call("GET", base, church.token).json.error.code, id)
            assert.equal(404, call("GET", base .. "/consent", church.token).status, id)
            assert.equal(404, call("PATCH", base, church.token, { firstName = "X" }).status, id)
            assert.equal(404, call("DELETE", base, church.token).status, id)
        end
        assert.equal("Theirs", call("GET", "/api/contacts/" .. theirs.id, other.token).json.contact.firstName)
        for _, c in ipairs(call("GET", "/api/contacts?limit=100", church.token).json.contacts) do
            assert.not_equal(theirs.id, c.id)
        end
        assert.equal(401, call("GET", "/api/contacts/" .. mine.id).status)
        assert.same({}, srv:unexpected_errors())
    end)

    it("sends nothing to an opted-out contact: 409 opted_out, nothing stored", function()
        local function stored(provider_id)
            return sql(church, "SELECT count(*) FROM messages WHERE provider_message_id = '" .. provider_id .. "'") == "1"
        end
        local conversation_of = {}
        for i, number in ipairs { "+15554300001", "+15554300002" } do
            local id = "pm-contacts-out-" .. i
            tx:deliver(srv, telnyx.received(id, number, church.number, "hello"), function() return stored(id) end)
            conversation_of[number] = sql(church, "SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id "
                .. "WHERE c.phone_number = '" .. number .. "'")
        end
        -- one number is suppressed, the other contact opted out (at the carrier)
        sql(church, "INSERT INTO suppressions (phone_number, source) VALUES ('+15554300001', 'keyword')")
        sql(church, "UPDATE contacts SET consent = 'opted_out', consent_source = 'carrier', consent_at = now() "
            .. "WHERE phone_number = '+15554300002'")
        for number, conversation in pairs(conversation_of) do
            local path = "/api/conversations/" .. conversation .. "/messages"
            local res = call("POST", path, church.token, { text = "Join us on Sunday" })
            assert.equal(409, res.status, res.body)
            assert.equal("opted_out", res.json.error.code)
            assert.equal("0", sql(church, "SELECT count(*) FROM messages m JOIN conversations v "
                .. "ON v.id = m.conversation_id WHERE m.direction = 'outbound' AND v.id = '" .. conversation .. "'"), number)
        end
        -- an opted-in contact still gets messages (the send itself fails here: nothing listens)
        local third = "pm-contacts-out-3"
        tx:deliver(srv, telnyx.received(third, "+15554300003", church.number, "hi"), function() return stored(third) end)
        local conversation = sql(church, "SELECT v.id FROM conversations v JOIN contacts c ON c.id = v.contact_id "
            .. "WHERE c.phone_number = '+15554300003'")
        local res = call("POST", "/api/conversations/" .. conversation .. "/messages", church.token, { text = "Welcome" })
        assert.equal(202, res.status, res.body)
        -- bad fields are all named at once
        assert.same({ "mediaUrls", "text" }, field_names(call("POST", "/api/conversations/" .. conversation .. "/messages",
            church.token, { text = ("x"):rep(1601), mediaUrls = { "ftp://x" } })))
        assert.same({}, srv:unexpected_errors { "outbound message failed" })
    end)

    describe("PATCH /api/church", function()
        local admin_token

        setup(function()
            local body = { email = "member." .. auth.STAMP .. "@contacts.example.org", password = "member password 1",
                name = "Member" }
            secrets.add(body.email, body.password)
            local res = call("POST", "/api/admins", church.token, body)
            assert.equal(201, res.status, res.body)
            res = auth.post(srv, "/api/auth/login", { email = body.email, password = body.password })
            assert.equal(200, res.status, res.body)
            admin_token = res.json.accessToken
        end)

        it("registration and /api/me carry the time zone and help text", function()
            assert.same({ "America/New_York", "" },
                { church.registered.church.timeZone, church.registered.church.helpText })
            local me = call("GET", "/api/me", church.token).json.church
            assert.same({ church.id, "America/New_York", "" }, { me.id, me.timeZone, me.helpText })
        end)

        it("changes the name, time zone and help text; /api/me shows them at once", function()
            local res = call("PATCH", "/api/church", church.token,
                { name = "Grace Chapel", timeZone = "America/Chicago", helpText = "Call 555-0100." })
            assert.equal(200, res.status, res.body)
            assert.same({ id = church.id, name = "Grace Chapel", phoneNumber = church.number,
                timeZone = "America/Chicago", helpText = "Call 555-0100." }, res.json.church)
            assert.same(res.json.church, call("GET", "/api/me", church.token).json.church)
            -- absent fields stay; an empty help text clears it
            res = call("PATCH", "/api/church", church.token, { helpText = "" })
            assert.same({ "Grace Chapel", "America/Chicago", "" },
                { res.json.church.name, res.json.church.timeZone, res.json.church.helpText })
            assert.equal("Grace Chapel|America/Chicago|", (psql(reg.url,
                "SELECT church_name, time_zone, help_text FROM tenants WHERE id = '" .. church.id .. "'")))
            assert.same({}, srv:unexpected_errors())
        end)

        it("refuses admins, unknown time zones and bad values", function()
            local res = call("PATCH", "/api/church", admin_token, { name = "Taken Over" })
            assert.equal(403, res.status, res.body)
            assert.equal("forbidden", res.json.error.code)
            assert.same({ "timeZone" }, field_names(call("PATCH", "/api/church", church.token,
                { timeZone = "Mars/Olympus_Mons", name = "Unchanged?" })))
            assert.same({ "helpText", "name", "timeZone" }, field_names(call("PATCH", "/api/church", church.token,
                { name = "x", helpText = ("h"):rep(301), timeZone = ("z"):rep(10000) })))
            assert.same({ "name" }, field_names(call("PATCH", "/api/church", church.token, { name = ("n"):rep(10000) })))
            assert.equal("Grace Chapel", call("GET", "/api/me", church.token).json.church.name)
            assert.equal(401, call("PATCH", "/api/church", nil, { name = "Nobody" }).status)
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
