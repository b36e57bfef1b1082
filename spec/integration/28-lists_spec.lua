-- Lists (Bearer): create, read, change and delete, keywords (format,
-- reserved words, one per church whatever the case), members added and
-- removed one by one, and isolation between churches.
local server = require "support.server"
local suite = require "support.suite"
local pg = require "support.pg"
local auth = require "support.auth"
local cjson = require "cjson"
local socket = require "socket"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, psql_file, url_of = pg.psql, pg.psql_file, pg.url_of

local OTHER_ID <const> = "00000000-0000-4000-8000-000000000000"

describe("lists", function()
    local reg
    local church, other -- { id, token, db }
    local srv = suite.server(function()
        reg = auth.registry("listspec")
        return {
            config = { workers = 1, limits = { request_timeout_s = 30 }, db = { acquire_timeout_ms = 20000 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false,
                    STEEPLE_SPOOL_DIR = server.tmpdir() .. "/spool" },
        }
    end, { stop_s = 10, after = function() reg:drop() end })

    local function call(method, path, token, body)
        return auth.call(srv, method, path, token, body)
    end

    local function register(name)
        return reg:church(srv, name)
    end

    local function new_list(c, body)
        local res = call("POST", "/api/lists", c.token, body)
        assert.equal(201, res.status, res.body)
        return res.json.list
    end

    local function new_contact(c, number)
        local res = call("POST", "/api/contacts", c.token, { phoneNumber = number })
        assert.equal(201, res.status, res.body)
        return res.json.contact
    end

    local fields = auth.fields

    setup(function()
        church = register("lists1")
        other = register("lists2")
    end)

    it("creates, reads, changes and deletes lists", function()
        assert.same({}, call("GET", "/api/lists", church.token).json.lists)
        local youth = new_list(church, { name = " Youth group ", keyword = "youth" })
        assert.same({ "Youth group", "YOUTH", 0 }, { youth.name, youth.keyword, youth.memberCount })
        assert.truthy(youth.createdAt:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$"), youth.createdAt)
        local plain = new_list(church, { name = "Youth group" }) -- names may repeat
        assert.equal(cjson.null, plain.keyword)
        assert.same({ youth, plain }, call("GET", "/api/lists", church.token).json.lists)
        assert.same(youth, call("GET", "/api/lists/" .. youth.id, church.token).json.list)
        local res = call("PATCH", "/api/lists/" .. youth.id, church.token, { name = "Teens" })
        assert.equal(200, res.status, res.body)
        assert.same({ "Teens", "YOUTH" }, { res.json.list.name, res.json.list.keyword })
        res = call("PATCH", "/api/lists/" .. youth.id, church.token, { keyword = "Teens2026" })
        assert.same({ "Teens", "TEENS2026" }, { res.json.list.name, res.json.list.keyword })
        -- null removes the keyword, which another list may then take
        res = call("PATCH", "/api/lists/" .. youth.id, church.token, { keyword = cjson.null })
        assert.equal(cjson.null, res.json.list.keyword)
        res = call("PATCH", "/api/lists/" .. plain.id, church.token, { keyword = "teens2026" })
        assert.equal("TEENS2026", res.json.list.keyword)
        assert.equal(204, call("DELETE", "/api/lists/" .. youth.id, church.token).status)
        assert.equal("not_found", call("GET", "/api/lists/" .. youth.id, church.token).json.error.code)
        assert.equal(404, call("DELETE", "/api/lists/" .. youth.id, church.token).status)
        assert.equal(404, call("PATCH", "/api/lists/" .. youth.id, church.token, { name = "x" }).status)
        assert.same({ plain.id }, { call("GET", "/api/lists", church.token).json.lists[1].id })
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps keywords unique per church, whatever their case", function()
        new_list(church, { name = "Choir", keyword = "choir" })
        for _, keyword in ipairs { "CHOIR", "Choir", " choir " } do
            local res = call("POST", "/api/lists", church.token, { name = "Another", keyword = keyword })
            assert.equal(409, res.status, keyword)
            assert.equal("keyword_taken", res.json.error.code)
        end
        local band = new_list(church, { name = "Band", keyword = "BAND" })
        local res = call("PATCH", "/api/lists/" .. band.id, church.token, { keyword = "choir" })
        assert.equal("keyword_taken", res.json.error.code)
        assert.equal("BAND", call("GET", "/api/lists/" .. band.id, church.token).json.list.keyword)
        -- another church may use the same keyword
        assert.equal("CHOIR", new_list(other, { name = "Choir", keyword = "Choir" }).keyword)
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses bad names and keywords", function()
        local bad = {
            { { name = ("n"):rep(10000) }, { "name" } },
            { { name = "" }, { "name" } },
            { { name = ("é"):rep(101) }, { "name" } },
            { {}, { "name" } },
            { { name = 5, keyword = 5 }, { "keyword", "name" } },
            { { name = "x", keyword = ("A"):rep(21) }, { "keyword" } },
            { { name = "x", keyword = "A" }, { "keyword" } },
            { { name = "x", keyword = "OPT OUT" }, { "keyword" } },
            { { name = "x", keyword = "youth-group" }, { "keyword" } },
            { { name = "x", keyword = "JÓVENES" }, { "keyword" } },
            { { name = "x", keyword = ("k"):rep(10000) }, { "keyword" } },
        }
        for _, word in ipairs { "STOP", "stopall", "Unsubscribe", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
            "START", "UNSTOP", "YES", "HELP", "info" } do
            bad[#bad + 1] = { { name = "x", keyword = word }, { "keyword" } }
        end
        for _, case in ipairs(bad) do
            local names = {}
            for name in pairs(fields(call("POST", "/api/lists", church.token, case[1]))) do names[#names + 1] = name end
            table.sort(names)
            assert.same(case[2], names, cjson.encode(case[1]):sub(1, 80))
        end
        assert.equal("is a reserved word",
            fields(call("POST", "/api/lists", church.token, { name = "x", keyword = "stop" })).keyword)
        local list = new_list(church, { name = "Greeters" })
        assert.same({ "keyword", "name" }, (function()
            local names = {}
            for name in pairs(fields(call("PATCH", "/api/lists/" .. list.id, church.token,
                { name = "", keyword = "HELP" }))) do names[#names + 1] = name end
            table.sort(names)
            return names
        end)())
        assert.equal("invalid_json", call("POST", "/api/lists", church.token, "[]").json.error.code)
        assert.equal(415, call("POST", "/api/lists", church.token, nil).status)
        assert.equal("0", (psql(url_of(church.db), "SELECT count(*) FROM lists WHERE name = 'x'")))
        assert.same({}, srv:unexpected_errors())
    end)

    it("adds and removes members one by one; deleting a list keeps its contacts", function()
        local list = new_list(church, { name = "Ushers" })
        local a, b = new_contact(church, "+15554500001"), new_contact(church, "+15554500002")
        local base = "/api/lists/" .. list.id .. "/contacts/"
        for _ = 1, 2 do -- twice: the same membership once
            assert.equal(204, call("PUT", base .. a.id, church.token).status)
        end
        assert.equal(204, call("PUT", base .. b.id, church.token, {}).status)
        assert.equal(2, call("GET", "/api/lists/" .. list.id, church.token).json.list.memberCount)
        assert.same({ list.id }, call("GET", "/api/contacts/" .. a.id, church.token).json.contact.lists)
        assert.equal(204, call("DELETE", base .. a.id, church.token).status)
        assert.equal(204, call("DELETE", base .. a.id, church.token).status)
        assert.equal(1, call("GET", "/api/lists/" .. list.id, church.token).json.list.memberCount)
        assert.same({}, call("GET", "/api/contacts/" .. a.id, church.token).json.contact.lists)
        -- a deleted contact is no member, and cannot become one
        assert.equal(204, call("DELETE", "/api/contacts/" .. b.id, church.token).status)
        assert.equal(0, call("GET", "/api/lists/" .. list.id, church.token).json.list.memberCount)
        assert.equal(404, call("PUT", base .. b.id, church.token).status)
        assert.equal(204, call("PUT", base .. a.id, church.token).status)
        assert.equal(204, call("DELETE", "/api/lists/" .. list.id, church.token).status)
        local contact = call("GET", "/api/contacts/" .. a.id, church.token)
        assert.equal(200, contact.status)
        assert.same({}, contact.json.contact.lists)
        assert.same({}, srv:unexpected_errors())
    end)

    it("holds memberships to existing lists and contacts, and removes them with either", function()
        local url = url_of(church.db)
        local list = new_list(church, { name = "Greeters" })
        local a, b = new_contact(church, "+15554600001"), new_contact(church, "+15554600002")
        local missing = "00000000-0000-4000-8000-000000000000"
        local out, ok = psql(url, "INSERT INTO list_members (list_id, contact_id) VALUES ('"
            .. missing .. "', '" .. a.id .. "')")
        assert.is_falsy(ok)
        assert.truthy(out:find("list_members_list_id_fkey", 1, true), out)
        out, ok = psql(url, "INSERT INTO list_members (list_id, contact_id) VALUES ('"
            .. list.id .. "', '" .. a.id .. "'), ('" .. list.id .. "', '" .. missing .. "')")
        assert.is_falsy(ok)
        assert.truthy(out:find("list_members_contact_id_fkey", 1, true), out)
        assert.equal("0", (psql(url, "SELECT count(*) FROM list_members WHERE list_id = '" .. list.id .. "'")))
        local base = "/api/lists/" .. list.id .. "/contacts/"
        assert.equal(204, call("PUT", base .. a.id, church.token).status)
        assert.equal(204, call("PUT", base .. b.id, church.token).status)
        -- a contact removed from the database takes its memberships with it
        assert.equal("", (psql(url, "DELETE FROM contacts WHERE id = '" .. b.id .. "'")))
        assert.equal("1", (psql(url, "SELECT count(*) FROM list_members WHERE list_id = '" .. list.id .. "'")))
        assert.equal(204, call("DELETE", "/api/lists/" .. list.id, church.token).status)
        assert.equal("0", (psql(url, "SELECT count(*) FROM list_members WHERE contact_id = '" .. a.id .. "'")))
        assert.same({}, srv:unexpected_errors())
    end)

    it("checks a statement's new members once per list, not once per member, and locks the lists", function()
        local url = url_of(church.db)
        local a, b = new_list(church, { name = "Choir" }), new_list(church, { name = "Ushers" })
        local missing = "00000000-0000-4000-8000-000000000000"
        psql(url, "INSERT INTO contacts (phone_number) SELECT '+1555470' || lpad(i::text, 4, '0') "
            .. "FROM generate_series(1, 300) i")
        local lists = "(VALUES ('" .. a.id .. "'::uuid), ('" .. b.id .. "'::uuid)) v(id)"
        -- 600 members of two lists in one statement: the lists' key is read twice, not 600 times
        local out, ok = psql_file(url, "BEGIN;\n"
            .. "INSERT INTO list_members (list_id, contact_id) SELECT v.id, c.id FROM contacts c, " .. lists
            .. " WHERE c.phone_number LIKE '+1555470%' ORDER BY c.id, v.id;\n"
            .. "SELECT pg_stat_get_xact_numscans('lists_pkey'::regclass);\nCOMMIT;")
        assert.truthy(ok, out)
        local scans = tonumber(out)
        assert.is_number(scans, out)
        assert.is_true(scans >= 1 and scans <= 2, "lists_pkey read " .. out .. " times")
        assert.equal(300, call("GET", "/api/lists/" .. a.id, church.token).json.list.memberCount)
        assert.equal(300, call("GET", "/api/lists/" .. b.id, church.token).json.list.memberCount)
        -- one list of a statement's two missing: nothing added; a statement that adds nothing passes
        out, ok = psql(url, "INSERT INTO list_members (list_id, contact_id) SELECT v.id, c.id FROM "
            .. "(SELECT id FROM contacts WHERE phone_number = '+15554700001') c, "
            .. "(VALUES ('" .. a.id .. "'::uuid), ('" .. missing .. "'::uuid)) v(id) ON CONFLICT DO NOTHING")
        assert.is_falsy(ok)
        assert.truthy(out:find("list_members_list_id_fkey", 1, true), out)
        out, ok = psql(url, "INSERT INTO list_members (list_id, contact_id) SELECT id, id FROM lists WHERE false")
        assert.truthy(ok, out)
        assert.equal("600", (psql(url, "SELECT count(*) FROM list_members WHERE list_id IN ('"
            .. a.id .. "', '" .. b.id .. "')")))
        -- a list that an open transaction adds members to cannot be deleted until it ends
        local c = new_contact(church, "+15554709999")
        local holder = "BEGIN; INSERT INTO list_members (list_id, contact_id) VALUES ('" .. a.id .. "', '"
            .. c.id .. "'); SELECT pg_sleep(30) /* holds Choir */; ROLLBACK"
        assert(os.execute("psql " .. server.quote(url) .. " -XAtq -c " .. server.quote(holder)
            .. " >/dev/null 2>&1 </dev/null &"))
        local waiting = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%holds Choir%' "
            .. "AND wait_event = 'PgSleep'"
        for _ = 1, 100 do
            if psql(url, waiting) == "1" then break end
            socket.sleep(0.1)
        end
        assert.equal("1", (psql(url, waiting)))
        out, ok = psql(url, "SET lock_timeout = '300ms'; DELETE FROM lists WHERE id = '" .. a.id .. "'")
        psql(url, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%holds Choir%' "
            .. "AND pid <> pg_backend_pid()")
        assert.is_falsy(ok)
        assert.truthy(out:find("lock timeout", 1, true), out)
        assert.equal(204, call("DELETE", "/api/lists/" .. a.id, church.token).status)
        assert.equal("300", (psql(url, "SELECT count(*) FROM list_members WHERE list_id IN ('"
            .. a.id .. "', '" .. b.id .. "')")))
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps each church's lists to itself: another church's or malformed ids are 404", function()
        local mine = new_list(church, { name = "Mine" })
        local theirs = new_list(other, { name = "Theirs" })
        local my_contact = new_contact(church, "+15554500010")
        local their_contact = new_contact(other, "+15554500011")
        for _, id in ipairs { theirs.id, "not-a-list", OTHER_ID, mine.id .. "0" } do
            assert.equal(404, call("GET", "/api/lists/" .. id, church.token).status, id)
            assert.equal(404, call("PATCH", "/api/lists/" .. id, church.token, { name = "x" }).status, id)
            assert.equal(404, call("DELETE", "/api/lists/" .. id, church.token).status, id)
            assert.equal(404, call("PUT", "/api/lists/" .. id .. "/contacts/" .. my_contact.id, church.token).status)
            assert.equal(404, call("DELETE", "/api/lists/" .. id .. "/contacts/" .. my_contact.id, church.token).status)
        end
        for _, id in ipairs { their_contact.id, "nope", OTHER_ID } do
            local path = "/api/lists/" .. mine.id .. "/contacts/" .. id
            assert.equal("not_found", call("PUT", path, church.token).json.error.code, id)
            assert.equal(404, call("DELETE", path, church.token).status, id)
        end
        for _, l in ipairs(call("GET", "/api/lists", church.token).json.lists) do assert.not_equal(theirs.id, l.id) end
        assert.equal("Theirs", call("GET", "/api/lists/" .. theirs.id, other.token).json.list.name)
        assert.equal(0, call("GET", "/api/lists/" .. theirs.id, other.token).json.list.memberCount)
        assert.equal(401, call("GET", "/api/lists").status)
        assert.equal(401, call("PUT", "/api/lists/" .. mine.id .. "/contacts/" .. my_contact.id).status)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
