-- POST /api/contacts/import: a CSV file of contacts merged in one transaction.
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local server = require "support.server"
local auth = require "support.auth"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local ROWS <const> = 50000
local PATH <const> = "/api/contacts/import"

-- The number of row i of the big file, and how the file writes it.
local function number(i) return string.format("+1555%07d", 2000000 + i) end
local function written(i)
    local digits = string.format("%07d", 2000000 + i)
    local local7 = digits:sub(1, 3) .. "-" .. digits:sub(4)
    if i % 3 == 0 then return "(555) " .. local7 end
    if i % 3 == 1 then return "555-" .. local7 end
    return number(i)
end

-- Row i's names as stored: row 7, 14, ... has a last name with a comma, quotes and a line break.
local function first(i) return "F" .. i end
local function last(i)
    if i % 7 == 0 then return 'Doe, "Jr"\r\nSecond' .. i end
    return "L" .. i
end
local function csv_quote(s) return '"' .. s:gsub('"', '""') .. '"' end

-- The big file (BOM, CRLF, extra column, columns in any order) and what it
-- should do: every 100th number is invalid, every 100th + 50 repeats the row
-- before it.
local function big_file()
    local out = { "\xEF\xBB\xBFLast_Name,Phone,notes,First_Name\r\n" }
    local line, rejected = 2, {}
    for i = 1, ROWS do
        local phone
        if i % 100 == 0 then
            phone = "555-12"
            rejected[#rejected + 1] = { row = line, reason = "invalid_phone" }
        elseif i % 100 == 50 then
            phone = number(i - 1)
        else
            phone = written(i)
        end
        local name_i = i % 100 == 50 and i - 1 or i
        out[#out + 1] = csv_quote(last(name_i)) .. "," .. phone .. ",note " .. i .. "," .. first(name_i) .. "\r\n"
        line = line + (name_i % 7 == 0 and 2 or 1)
    end
    return table.concat(out), rejected
end

describe("contacts import", function()
    local reg
    local church, other -- { token, db }
    local srv = suite.server(function()
        reg = auth.registry("impspec")
        return {
            config = { workers = 1, limits = { request_timeout_s = 120 },
                       db = { acquire_timeout_ms = 20000, statement_timeout_ms = 60000 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false },
        }
    end, { stop_s = 10, after = function() reg:drop() end })

    local function sql(c, text) return psql(url_of(c.db), text) end
    local function count(c, text) return tonumber((sql(c, text))) end

    local function import(c, body, query, content_type)
        local res = assert(http.request {
            port = srv.port, method = "POST", path = PATH .. (query or ""), timeout = 120, body = body,
            headers = { ["Content-Type"] = content_type or "text/csv", Authorization = "Bearer " .. c.token },
        })
        res.json = res.body and res.body ~= "" and cjson.decode(res.body) or nil
        return res
    end

    local function register(n)
        local res = auth.post(srv, "/api/auth/register", auth.church("imp" .. n))
        assert.equal(201, res.status, res.body)
        return { token = res.json.accessToken,
                 db = (psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")) }
    end

    local function new_list(c, name)
        return (sql(c, "INSERT INTO lists (name) VALUES ('" .. name .. "') RETURNING id"))
    end

    local function assert_validation(res, field)
        assert.equal(400, res.status, res.body)
        assert.equal("validation_failed", res.json.error.code)
        assert.is_string(res.json.error.fields[field], res.body)
    end

    setup(function() church, other = register(1), register(2) end)

    it("imports 50,000 rows: exact counts, rejected rows, names, consent and list", function()
        -- existing contacts for rows 1-99: 1-30 and 71-99 the same names, 31-60 other names,
        -- 61-70 deleted; row 5 opted out; row 201's number suppressed without a contact
        local pre = {}
        for i = 1, 99 do
            if i ~= 50 then
                local f, l = first(i), last(i)
                if i > 30 and i <= 60 then f, l = "Old" .. i, "Old" end
                local deleted = (i > 60 and i <= 70) and "now()" or "NULL"
                if deleted ~= "NULL" then f, l = nil, nil end
                pre[#pre + 1] = string.format("('%s', %s, %s, %s)", number(i),
                    f and "$q$" .. f .. "$q$" or "NULL", l and "$q$" .. l .. "$q$" or "NULL", deleted)
            end
        end
        sql(church, "INSERT INTO contacts (phone_number, first_name, last_name, deleted_at) VALUES "
            .. table.concat(pre, ","))
        sql(church, "UPDATE contacts SET consent = 'opted_out', consent_source = 'keyword', consent_at = now() "
            .. "WHERE phone_number = '" .. number(5) .. "'; "
            .. "INSERT INTO suppressions (phone_number, source) VALUES ('" .. number(5) .. "', 'keyword'), ('"
            .. number(201) .. "', 'keyword')")
        local list = new_list(church, "Everyone")
        local body, rejected = big_file()

        local res = import(church, body, "?list=" .. list .. "&consent=opted_in")
        assert.equal(200, res.status, res.body)

        local distinct = ROWS - ROWS // 100 - ROWS // 100 -- minus invalid, minus repeats
        local existing = 98
        assert.same({ created = distinct - existing + 10, updated = 29, unchanged = existing - 29 - 10,
                      rejected = rejected }, res.json)
        assert.equal(distinct, count(church, "SELECT count(*) FROM contacts WHERE deleted_at IS NULL"))
        assert.equal(distinct, count(church, "SELECT member_count FROM lists WHERE id = '" .. list .. "'"))
        -- names as written, quoted ones included
        assert.equal(last(7), sql(church, "SELECT last_name FROM contacts WHERE phone_number = '" .. number(7) .. "'"))
        assert.equal("F31", sql(church, "SELECT first_name FROM contacts WHERE phone_number = '" .. number(31) .. "'"))
        assert.equal(last(14), sql(church, "SELECT last_name FROM contacts WHERE phone_number = '" .. number(14) .. "'"))
        -- consent: opted in except the opted-out and the suppressed numbers
        assert.equal(distinct - 2, count(church,
            "SELECT count(*) FROM contacts WHERE consent = 'opted_in' AND consent_source = 'import'"))
        assert.equal("opted_out|keyword", sql(church, "SELECT consent || '|' || consent_source FROM contacts "
            .. "WHERE phone_number IN ('" .. number(5) .. "')"))
        assert.equal("opted_out", sql(church, "SELECT consent FROM contacts WHERE phone_number = '"
            .. number(201) .. "'"))
        -- one event per change: all but the number that stayed opted out
        assert.equal(distinct - 1, count(church, "SELECT count(*) FROM consent_events"))
        -- the deleted ones are back
        assert.equal(0, count(church, "SELECT count(*) FROM contacts WHERE deleted_at IS NOT NULL"))

        -- the same file again changes nothing
        res = import(church, body, "?list=" .. list .. "&consent=opted_in")
        assert.equal(200, res.status, res.body)
        assert.same({ created = 0, updated = 0, unchanged = distinct, rejected = rejected }, res.json)
        assert.equal(distinct - 1, count(church, "SELECT count(*) FROM consent_events"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("leaves nothing behind when a row fails the merge, and keeps serving", function()
        sql(other, [[CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.first_name = 'Boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER boom BEFORE INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION boom()]])
        local list = new_list(other, "Failing")
        local rows = { "phone,first_name" }
        for i = 1, 2000 do rows[#rows + 1] = number(i) .. "," .. (i == 1500 and "Boom" or "Ok") end
        local res = import(other, table.concat(rows, "\n"), "?list=" .. list .. "&consent=opted_in")
        assert.equal(500, res.status, res.body)
        assert.equal("internal_error", res.json.error.code)
        assert.equal(0, count(other, "SELECT count(*) FROM contacts"))
        assert.equal(0, count(other, "SELECT count(*) FROM list_members"))
        assert.equal(0, count(other, "SELECT count(*) FROM consent_events"))
        assert.equal(0, count(other, "SELECT member_count FROM lists WHERE id = '" .. list .. "'"))
        sql(other, "DROP TRIGGER boom ON contacts")
        res = import(other, table.concat(rows, "\n"), "?list=" .. list)
        assert.equal(200, res.status, res.body)
        assert.equal(2000, res.json.created)
        assert.equal(2000, count(other, "SELECT member_count FROM lists WHERE id = '" .. list .. "'"))
        assert.same({}, srv:unexpected_errors { "handler failed" })
    end)

    it("merges a number that another transaction gives a contact while the import inserts", function()
        -- the other session's contact is not committed when the import's statement starts, so the
        -- import inserts the number too, waits for that session, and merges again once it commits
        local racer = number(3005)
        pg.uncommitted(url_of(other.db), "INSERT INTO contacts (phone_number, first_name) VALUES ('"
            .. racer .. "', 'Racer')", 2 * server.SLOW)
        local rows = { "phone,first_name" }
        for i = 3001, 3010 do rows[#rows + 1] = number(i) .. ",N" .. i end
        local res = import(other, table.concat(rows, "\n"), "?consent=opted_in")
        assert.equal(200, res.status, res.body)
        assert.same({ created = 9, updated = 1, unchanged = 0, rejected = {} }, res.json)
        assert.equal("N3005|opted_in|import", sql(other, "SELECT first_name || '|' || consent || '|' || consent_source "
            .. "FROM contacts WHERE phone_number = '" .. racer .. "'"))
        assert.equal(10, count(other, "SELECT count(*) FROM consent_events WHERE phone_number BETWEEN '"
            .. number(3001) .. "' AND '" .. number(3010) .. "'"))
        assert.truthy(srv:log_contains("merged again with upserts"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses another church's list, an unknown one and a malformed one", function()
        local theirs = new_list(other, "Theirs")
        assert_validation(import(church, "phone\n5551234567\n", "?list=" .. theirs), "list")
        assert_validation(import(church, "phone\n5551234567\n", "?list=00000000-0000-4000-8000-000000000000"), "list")
        assert_validation(import(church, "phone\n5551234567\n", "?list=nope"), "list")
        assert.equal(0, count(church, "SELECT count(*) FROM contacts WHERE phone_number = '+15551234567'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses bad files and parameters", function()
        assert_validation(import(church, "number,first_name\n5551234567,A\n"), "phone")
        assert_validation(import(church, "phone\n5551234567\n", "?consent=opted_out"), "consent")
        assert_validation(import(church, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe\0\x01"), "file")
        assert_validation(import(church, "\xff\xfe\xfd,phone\n1\n"), "file")
        assert_validation(import(church, ""), "file")
        local many = { "phone" }
        for i = 1, 60000 do many[#many + 1] = number(i) end
        assert_validation(import(church, table.concat(many, "\n")), "file")

        local res = import(church, "phone\n5551234567\n", nil, "application/json")
        assert.equal(415, res.status, res.body)
        assert.equal("unsupported_media_type", res.json.error.code)
        res = import(church, "phone\n5551234567\n", nil, "text/plain")
        assert.equal(415, res.status, res.body)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a body over contacts.import_max_bytes with 413 JSON before reading it", function()
        local sock = assert(http.raw(srv.port))
        assert(sock:send("POST " .. PATH .. " HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            .. "Authorization: Bearer " .. church.token .. "\r\nContent-Length: " .. (6 * 1024 * 1024) .. "\r\n\r\n"))
        local res, err = http.read_response(sock, 10)
        sock:close()
        assert.is_table(res, "no response before the body: " .. tostring(err))
        assert.equal(413, res.status)
        assert.equal("payload_too_large", cjson.decode(res.body).error.code)
        assert.same({}, srv:unexpected_errors())
    end)

    it("rejects rows, never the file: 100,000 commas, 10,000-character names; a header alone", function()
        local res = import(church, "phone,first_name\n" .. string.rep(",", 100000) .. "\n+15557000001,"
            .. string.rep("n", 10000) .. "\n+15557000002,Ann\n")
        assert.equal(200, res.status, res.body)
        assert.same({ created = 1, updated = 0, unchanged = 0,
                      rejected = { { row = 2, reason = "invalid_phone" }, { row = 3, reason = "name_too_long" } } },
            res.json)
        res = import(church, "\xEF\xBB\xBFphone,first_name\r\n")
        assert.equal(200, res.status, res.body)
        assert.same({ created = 0, updated = 0, unchanged = 0, rejected = {} }, res.json)
        assert.truthy(res.body:find('"rejected":[]', 1, true), res.body)
        assert.same({}, srv:unexpected_errors())
    end)

    it("reads numbers by the E.164 rules: separators dropped, a vertical tab too, the letter v never", function()
        local res = import(church, "phone,first_name\n"
            .. "555v703v0001,Vee\n"             -- 2: v is a letter
            .. "\"555\v703\v0002\",Tab\n"      -- 3: vertical tabs dropped
            .. "+1 (555) 703-0003,Plus\n"       -- 4
            .. "1.555.703.0004,One\n"           -- 5
            .. "+05557030005,Zero\n"            -- 6: no country code starts with 0
            .. "555 703 0006 x7,Ext\n"          -- 7
            .. "\t 555-703-0007 \t,Trim\n"      -- 8: trimmed
            .. "555\xC2\xA0703\xC2\xA00008,Nbsp\n" -- 9: a no-break space is no separator
            .. ",Empty\n")                      -- 10
        assert.equal(200, res.status, res.body)
        assert.same({ created = 4, updated = 0, unchanged = 0,
                      rejected = { { row = 2, reason = "invalid_phone" }, { row = 6, reason = "invalid_phone" },
                                   { row = 7, reason = "invalid_phone" }, { row = 9, reason = "invalid_phone" },
                                   { row = 10, reason = "invalid_phone" } } }, res.json)
        assert.equal("+15557030002 Tab,+15557030003 Plus,+15557030004 One,+15557030007 Trim",
            sql(church, "SELECT string_agg(phone_number || ' ' || first_name, ',' ORDER BY phone_number) "
                .. "FROM contacts WHERE phone_number LIKE '+1555703%'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops cleanly", function()
        srv:assert_stops_cleanly()
    end)
end)
