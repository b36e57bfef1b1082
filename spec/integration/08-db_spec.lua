-- PostgreSQL from Lua routes: type conversion, parameters, SQL errors,
-- transactions, pool caps and timeouts, database names, lost connections and
-- the circuit breaker (against a private cluster that the specs stop).
--
-- Needs DATABASE_URL (spec/run.sh starts a throw-away cluster and sets it).
-- Every database, table and cluster made here has a name unique to this run
-- and is removed in teardown.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"

local quote = server.quote

-- Every command is bounded: a stopped postmaster must not hang the suite.
local function capture(cmd)
    local p = assert(io.popen("timeout -s KILL 60 sh -c " .. server.quote(cmd), "r"))
    local out = p:read("a")
    local ok = p:close()
    return out, ok
end

-- Unique to this run: the pid of the Lua process running the specs.
local RUN = capture("echo $PPID"):match("%d+")
local PREFIX = "spec08_" .. RUN

local BASE_URL = os.getenv("DATABASE_URL")

-- The URL of another database on the server of url.
local function url_for(url, dbname)
    local out, n = url:gsub("^(postgresql://[^/?]*/)[^?]*", "%1" .. dbname, 1)
    assert(n == 1, "cannot place a database name in " .. url)
    return out
end

-- Runs one SQL command with psql; returns its unaligned output, trimmed.
local function psql(url, sql)
    local out, ok = capture("psql -X -q -v ON_ERROR_STOP=1 -At " .. quote(url) .. " -c " .. quote(sql) .. " 2>&1")
    assert(ok, "psql failed: " .. sql .. "\n" .. out)
    return (out:gsub("%s+$", ""))
end

local function psql_number(url, sql)
    local out = psql(url, sql)
    local n = assert(tonumber(out), "not a number from psql: " .. out)
    return n
end

-- How often the sequence "runs" has been called.
local RUNS_SQL <const> = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM runs"

local function create_database(name)
    psql(BASE_URL, string.format('CREATE DATABASE "%s" TEMPLATE template0', name))
    return url_for(BASE_URL, name)
end

local function drop_database(name)
    if BASE_URL then pcall(psql, BASE_URL, string.format('DROP DATABASE IF EXISTS "%s" WITH (FORCE)', name)) end
end

-- steeple's connections to one database, as PostgreSQL sees them.
local function steeple_connections(url)
    return psql_number(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'steeple'"
        .. " AND datname = current_database()")
end

local function post(srv, path, body, extra)
    local spec = {
        port = srv.port, method = "POST", path = path, body = http.json_encode(body),
        headers = { ["Content-Type"] = "application/json" }, timeout = 30,
    }
    for k, v in pairs(extra or {}) do spec[k] = v end
    return assert(http.request(spec))
end

local function get(srv, path, timeout)
    return assert(http.request { port = srv.port, path = path, timeout = timeout or 30 })
end

-- Polls fn every interval seconds until it returns a true value or timeout
-- seconds pass; returns its last value.
local function wait_for(fn, timeout, interval)
    local deadline = http.now() + timeout
    while true do
        local v = fn()
        if v or http.now() >= deadline then return v end
        http.sleep(interval or 0.05)
    end
end

local function assert_generic_error(res, code, status)
    assert.equal(status, res.status, res.body)
    assert.is_table(res.json, res.body)
    assert.equal(code, res.json.error.code)
    assert.is_string(res.json.error.requestId)
    assert.equal(res.headers["x-request-id"], res.json.error.requestId)
end

describe("database queries", function()
    local srv
    local DB = PREFIX .. "_q"
    local MIXED = "Spec08_" .. RUN .. "-Mixed"
    local LONG = (PREFIX .. "_long_" .. string.rep("x", 63)):sub(1, 63)
    local url

    srv = suite.server(function()
        assert(BASE_URL, "DATABASE_URL is not set (run the specs through spec/run.sh)")
        url = create_database(DB)
        create_database(MIXED)
        create_database(LONG)
        psql(url, "CREATE TABLE items (id serial PRIMARY KEY, v text);"
            .. " CREATE TABLE x (id int);"
            .. " CREATE TABLE users (id serial PRIMARY KEY, email text CONSTRAINT users_email_key UNIQUE);"
            .. " CREATE TABLE blobs (id int PRIMARY KEY, b bytea);"
            .. " CREATE TABLE txrows (v text CONSTRAINT txrows_v_key UNIQUE);"
            .. " CREATE TABLE counted (n int);"
            .. " CREATE SEQUENCE runs")
        return {
            config = { workers = 1, limits = { request_timeout_s = 10 } },
        }
    end, {
        after = function()
            drop_database(DB)
            drop_database(MIXED)
            drop_database(LONG)
        end,
    })

    local function query(sql, params, extra)
        local body = { sql = sql, params = params, db = DB }
        for k, v in pairs(extra or {}) do body[k] = v end
        return post(srv, "/test/db/query", body)
    end

    it("answers /ready with 200 while the registry answers", function()
        local res = get(srv, "/ready")
        assert.equal(200, res.status)
        assert.same({ status = "ready" }, res.json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("converts every column type to the documented Lua value, whatever the session time zone", function()
        local expected = {
            int2 = { type = "integer", value = "1" },
            int2_min = { type = "integer", value = "-32768" },
            int4 = { type = "integer", value = "2147483647" },
            int4_min = { type = "integer", value = "-2147483648" },
            int8 = { type = "integer", value = "9223372036854775807" },
            int8_min = { type = "integer", value = "-9223372036854775808" },
            oid = { type = "integer", value = "4294967295" },
            bool_true = { type = "boolean", value = true },
            bool_false = { type = "boolean", value = false },
            float4 = { type = "float", value = string.format("%.17g", 1.5) },
            float8 = { type = "float", value = string.format("%.17g", -0.1) },
            float8_big = { type = "float", value = string.format("%.17g", 1e300) },
            numeric = { type = "string", value = "12345678901234567890.000123",
                hex = "31323334353637383930313233343536373839302e303030313233" },
            numeric_scaled = { type = "string", value = "0.10", hex = "302e3130" },
            text = { type = "string", value = 'héllo "wörld"', hex = "68c3a96c6c6f202277c3b6726c6422" },
            varchar = { type = "string", value = "ab c", hex = "61622063" },
            empty = { type = "string", value = "", hex = "" },
            uuid = { type = "string", value = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                hex = "61306565626339392d396330622d346566382d626236642d366262396264333830613131" },
            date = { type = "string", value = "2026-11-29", hex = "323032362d31312d3239" },
            ts = { type = "string", value = "2026-11-29T08:00:00Z",
                hex = "323032362d31312d32395430383a30303a30305a" },
            ts_frac = { type = "string", value = "2026-11-29T08:00:00.123456Z",
                hex = "323032362d31312d32395430383a30303a30302e3132333435365a" },
            ts_half = { type = "string", value = "2026-11-29T08:00:00.5Z",
                hex = "323032362d31312d32395430383a30303a30302e355a" },
            ts_year_end = { type = "string", value = "2027-01-01T03:00:00Z",
                hex = "323032372d30312d30315430333a30303a30305a" },
            bytea = { type = "string", hex = "00ff10" },
            bytea_empty = { type = "string", value = "", hex = "" },
            json = { type = "table", value = {
                a = { type = "float", value = "1" },
                b = { type = "table", value = {
                    ["1"] = { type = "boolean", value = true },
                    ["2"] = { type = "null" },
                    ["3"] = { type = "string", value = "x", hex = "78" },
                } },
                c = { type = "table", value = { d = { type = "float", value = "2.5" } } },
            } },
            jsonb = { type = "table", value = {
                k = { type = "string", value = "v", hex = "76" },
                n = { type = "null" },
            } },
            jsonb_array = { type = "table", value = {
                ["1"] = { type = "float", value = "1" },
                ["2"] = { type = "float", value = "2" },
            } },
            null_int = { type = "null" },
            null_text = { type = "null" },
            null_json = { type = "null" },
        }
        for _, tz in ipairs { "UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati" } do
            local res = get(srv, "/test/db/types?tz=" .. tz)
            assert.equal(200, res.status, res.body)
            for name, want in pairs(expected) do
                assert.same(want, res.json.values[name], "column " .. name .. " with TimeZone " .. tz)
            end
            for name in pairs(res.json.values) do
                assert.is_table(expected[name], "unexpected column " .. name)
            end
            assert.equal(1, res.json.count)
            assert.is_true(res.json.nullIsCjsonNull)
            assert.is_true(res.json.jsonNullIsDbNull)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("encodes SQL NULL as JSON null and reports affected rows as count", function()
        local res = query("SELECT NULL::int AS n, 1 AS one")
        assert.equal(200, res.status, res.body)
        assert.truthy(res.body:find('"n":null', 1, true), res.body)
        assert.equal(1, res.json.rows[1].one)
        assert.same({ n = "null", one = "integer" }, res.json.types[1])
        assert.equal(1, res.json.count)

        res = query("INSERT INTO items (v) VALUES ('a'), ('b'), ('c')")
        assert.same({ 3, "integer", 0 }, { res.json.count, res.json.countType, res.json.rowsLength })
        res = query("UPDATE items SET v = v || '!' WHERE v IN ('a', 'b')")
        assert.equal(2, res.json.count)
        res = query("SELECT v FROM items WHERE v LIKE '%!' ORDER BY v")
        assert.same({ { v = "a!" }, { v = "b!" } }, res.json.rows)
        assert.equal(2, res.json.count)
        res = query("SELECT v FROM items WHERE false")
        assert.same({ 0, 0 }, { res.json.count, res.json.rowsLength })
        res = query("DELETE FROM items")
        assert.equal(3, res.json.count)
        assert.equal(0, psql_number(url, "SELECT count(*) FROM items"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("passes NULL, booleans, integers, floats and strings as parameters", function()
        local res = query(
            "SELECT $1::int AS a, $2::text AS b, $3::bool AS t, $4::bool AS f,"
                .. " $5::int8 = 9223372036854775807 AS big, $6::int8 = -9223372036854775808 AS small,"
                .. " $7::float8 AS fl, $8::float8 = 0.1 AS tenth, $9::int AS i, $10::text AS s,"
                .. " $11::text IS NULL AS json_null, $3 IS NULL AS nope",
            {
                { null = true }, { ["nil"] = true }, true, false,
                { int = "9223372036854775807" }, { int = "-9223372036854775808" },
                { float = "1.5" }, { float = "0.1" }, { int = "-42" }, "héllo", http.json_decode("[null]")[1],
            })
        assert.equal(200, res.status, res.body)
        assert.same({
            a = "null", b = "null", t = "boolean", f = "boolean", big = "boolean", small = "boolean",
            fl = "float", tenth = "boolean", i = "integer", s = "string", json_null = "boolean", nope = "boolean",
        }, res.json.types[1])
        local row = res.json.rows[1]
        assert.same({ true, false, true, true, 1.5, true, -42, "héllo", true, false },
            { row.t, row.f, row.big, row.small, row.fl, row.tenth, row.i, row.s, row.json_null, row.nope })
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps parameters as data: an SQL injection attempt is stored verbatim", function()
        local evil = "'); DROP TABLE x; --"
        local nasty = "$1 \\' \" ; -- /* é \t\n end"
        local res = query("INSERT INTO items (v) VALUES ($1), ($2)", { evil, nasty })
        assert.equal(200, res.status, res.body)
        assert.equal(2, res.json.count)
        res = query("SELECT v FROM items WHERE v = $1 OR v = $2 ORDER BY id", { evil, nasty })
        assert.same({ { v = evil }, { v = nasty } }, res.json.rows)
        assert.equal("x", psql(url, "SELECT tablename FROM pg_tables WHERE tablename = 'x'"))
        assert.equal(evil, psql(url, "SELECT v FROM items ORDER BY id LIMIT 1"))
        psql(url, "DELETE FROM items")
        assert.same({}, srv:unexpected_errors())
    end)

    it("round-trips every byte value through a bytea parameter", function()
        local all = {}
        for b = 0, 255 do all[#all + 1] = string.format("%02x", b) end
        local hex = table.concat(all)
        local res = query("INSERT INTO blobs (id, b) VALUES (1, $1), (2, $2)",
            { { bytea_hex = hex }, { bytea_hex = "" } })
        assert.equal(200, res.status, res.body)
        assert.equal(2, res.json.count)
        assert.equal(hex, psql(url, "SELECT encode(b, 'hex') FROM blobs WHERE id = 1"))
        assert.equal("256", psql(url, "SELECT length(b) FROM blobs WHERE id = 1"))
        res = query("SELECT b, length(b) AS n FROM blobs ORDER BY id")
        assert.same({ { b = { bytea_hex = hex }, n = 256 }, { b = "", n = 0 } }, res.json.rows)
        res = query("SELECT $1::bytea = '\\x00ff'::bytea AS same", { { bytea_hex = "00ff" } })
        assert.is_true(res.json.rows[1].same)
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses parameters of the wrong type with 500 before any SQL runs", function()
        local ok = query("INSERT INTO items (v) VALUES ($1)", { { float = "1.5" } })
        assert.equal(200, ok.status, ok.body)
        assert.equal("1.5", psql(url, "SELECT string_agg(v, ',') FROM items"))
        local cases = {
            { { table = true }, "cannot be a parameter" },
            { { ["function"] = true }, "cannot be a parameter" },
            { { nan = true }, "NaN and infinities cannot be stored" },
            { { inf = true }, "NaN and infinities cannot be stored" },
            { { nul = true }, "a string with a NUL byte" },
        }
        for i, case in ipairs(cases) do
            local res = post(srv, "/test/db/query",
                { db = DB, sql = "INSERT INTO items (v) VALUES ($1)", params = { case[1] } },
                { headers = { ["Content-Type"] = "application/json", ["X-Request-Id"] = "badparam" .. i } })
            assert_generic_error(res, "internal_error", 500)
            assert.is_nil(res.body:find("INSERT", 1, true))
            local entry = srv:wait_entry { msg = "handler failed", requestId = "badparam" .. i }
            assert.is_table(entry, "no handler failed line for case " .. i)
            assert.truthy(tostring(entry.error):find(case[2], 1, true), entry.error)
        end
        assert.equal("1.5", psql(url, "SELECT string_agg(v, ',') FROM items"))
        psql(url, "DELETE FROM items")
        assert.same({}, srv:unexpected_errors {
            "cannot be a parameter", "NaN and infinities cannot be stored", "a string with a NUL byte",
        })
    end)

    it("raises SQL errors with their sqlstate, constraint and detail", function()
        local res = query("SELEC 1")
        assert.equal(200, res.status, res.body)
        local e = res.json.error
        assert.same({ "sql", "42601", true, false, false, "steeple.db.error" },
            { e.kind, e.sqlstate, e.isError, e.isUnavailable, e.isUnique, e.metatable })
        assert.matches("syntax error", e.message)
        assert.matches("^database error 42601: ", e.text)

        res = query("SELECT * FROM no_such_table_" .. RUN)
        assert.same({ "sql", "42P01" }, { res.json.error.kind, res.json.error.sqlstate })

        res = query("SELECT $1::int AS n")
        assert.equal("08P01", res.json.error.sqlstate)

        assert.equal(200, query("INSERT INTO users (email) VALUES ($1)", { "ruth@example.org" }).status)
        res = query("INSERT INTO users (email) VALUES ($1)", { "ruth@example.org" }, { constraint = "users_email_key" })
        e = res.json.error
        assert.same({ "sql", "23505", "users_email_key", true, true },
            { e.kind, e.sqlstate, e.constraint, e.isUnique, e.isUniqueOf })
        assert.equal("Key (email)=(ruth@example.org) already exists.", e.detail)
        res = query("INSERT INTO users (email) VALUES ($1)", { "ruth@example.org" }, { constraint = "other_key" })
        assert.is_false(res.json.error.isUniqueOf)
        assert.equal("1", psql(url, "SELECT count(*) FROM users"))

        -- the connection that saw the errors is still good
        res = query("SELECT 2 AS two")
        assert.same({ { two = 2 } }, res.json.rows)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers 500 with a generic body when a route lets an SQL error escape", function()
        local res = post(srv, "/test/db/query", { db = DB, sql = "SELECT * FROM secret_table_" .. RUN, raise = true },
            { headers = { ["Content-Type"] = "application/json", ["X-Request-Id"] = "escaped-sql" } })
        assert_generic_error(res, "internal_error", 500)
        for _, leak in ipairs { "secret_table", "SELECT", "42P01", DB, "steeple.db" } do
            assert.is_nil(res.body:find(leak, 1, true), "the body reveals " .. leak)
        end
        local entry = srv:wait_entry { msg = "handler failed", requestId = "escaped-sql" }
        assert.is_table(entry)
        assert.matches("42P01", tostring(entry.error))
        assert.same({}, srv:unexpected_errors { "database error 42P01" })
    end)

    it("commits a transaction on one pinned connection", function()
        local res = post(srv, "/test/db/tx", { db = DB, table = "txrows", values = { "one", "two", "three" } })
        assert.equal(200, res.status, res.body)
        local seen = res.json.seen
        assert.equal(3, #seen)
        for i = 2, 3 do
            assert.equal(seen[1].pid, seen[i].pid)
            assert.equal(seen[1].xid, seen[i].xid)
        end
        assert.equal("one,three,two", psql(url, "SELECT string_agg(v, ',' ORDER BY v) FROM txrows"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("rolls a transaction back when the function raises, and the connection comes back clean", function()
        local res = post(srv, "/test/db/tx", { db = DB, table = "txrows", values = { "four", "five" }, fail = "lua" },
            { headers = { ["Content-Type"] = "application/json", ["X-Request-Id"] = "tx-lua" } })
        assert_generic_error(res, "internal_error", 500)
        assert.equal("3", psql(url, "SELECT count(*) FROM txrows"))

        res = post(srv, "/test/db/tx", { db = DB, table = "txrows", values = { "six", "seven" }, fail = "sql" })
        assert.equal(200, res.status, res.body)
        assert.same({ "sql", "23505", "txrows_v_key" },
            { res.json.error.kind, res.json.error.sqlstate, res.json.error.constraint })
        assert.equal("3", psql(url, "SELECT count(*) FROM txrows"))

        -- nothing is left inside a transaction: plain queries autocommit
        for i = 1, 5 do
            assert.equal(200, query("INSERT INTO counted (n) VALUES ($1)", { { int = tostring(i) } }).status)
        end
        assert.equal("5", psql(url, "SELECT count(*) FROM counted"))
        assert.equal("0", psql(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'steeple'"
            .. " AND datname = current_database() AND state LIKE 'idle in transaction%'"))
        assert.same({}, srv:unexpected_errors { "the transaction fails on purpose" })
    end)

    it("lends a pinned connection that reports its backend pid and application_name", function()
        local res = get(srv, "/test/db/acquire?db=" .. DB)
        assert.equal(200, res.status, res.body)
        assert.equal(res.json.serverPid, res.json.pid)
        assert.equal("steeple", res.json.app)
        assert.is_false(res.json.usableAfterRelease)
        assert.same({}, srv:unexpected_errors())
    end)

    it("opens pools of any database with a valid name, upper case and hyphens included", function()
        for _, name in ipairs { DB, MIXED, LONG, "steeple" } do
            local res = get(srv, "/test/db/pool?name=" .. name)
            assert.equal(200, res.status, res.body)
            assert.same({ db = name }, res.json)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses bad database names and unknown servers before any SQL", function()
        local connects = srv:log_count("cannot connect")
        local bad = {
            "a'b", "a%22b", "a%20b", "a;b", "a/b", "caf%C3%A9", "", string.rep("a", 2000), LONG .. "y",
            "x%27%29%3B%20DROP%20DATABASE%20steeple%3B--",
        }
        for i, name in ipairs(bad) do
            local res = get(srv, "/test/db/pool?catch=1&name=" .. name)
            assert.equal(200, res.status, res.body)
            assert.is_true(res.json.refused, "accepted the name " .. name)
            assert.is_false(res.json.dbError)
            assert.matches("not a valid database name", res.json.message)

            res = assert(http.request {
                port = srv.port, path = "/test/db/pool?name=" .. name, headers = { ["X-Request-Id"] = "badname" .. i },
            })
            assert_generic_error(res, "internal_error", 500)
        end
        local res = get(srv, "/test/db/pool?catch=1&server=nope&name=steeple")
        assert.is_true(res.json.refused)
        assert.matches("unknown database server", res.json.message)
        assert_generic_error(get(srv, "/test/db/pool?server=nope&name=steeple"), "internal_error", 500)

        assert.equal(connects, srv:log_count("cannot connect"))
        assert.same({}, srv:unexpected_errors { "not a valid database name", "unknown database server" })
    end)

    it("does not run a statement again when its connection dies while it runs", function()
        local sql = "SELECT nextval('runs') AS n, pg_sleep(8)"
        local results = http.run {
            function()
                return post(srv, "/test/db/query", { db = DB, sql = sql })
            end,
            function()
                local pid = wait_for(function()
                    local out = psql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'steeple'"
                        .. " AND datname = current_database() AND state = 'active'"
                        .. " AND query LIKE '%nextval(''runs'')%'")
                    return tonumber(out)
                end, 5)
                assert(pid, "the statement never showed up in pg_stat_activity")
                assert.equal("t", psql(url, "SELECT pg_terminate_backend(" .. pid .. ")"))
                return pid
            end,
        }
        assert.is_true(results[1].ok, results[1].err)
        assert.is_true(results[2].ok, results[2].err)
        local res = results[1].value
        -- ran once: the sequence moved once
        assert.equal("1", psql(url, RUNS_SQL), "the statement ran more than once")
        if res.status == 200 then
            assert.is_table(res.json.error, "the statement succeeded on a second run: " .. res.body)
        else
            assert_generic_error(res, "service_unavailable", 503)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("prepared statements", function()
    local DB = PREFIX .. "_prep"
    local url
    -- the same cases through both paths: prepared by name (the default) and
    -- every statement unnamed (db.prepared_statements = false)
    local on = suite.server(function()
        assert(BASE_URL, "DATABASE_URL is not set (run the specs through spec/run.sh)")
        url = create_database(DB)
        psql(url, "CREATE TABLE items (id serial PRIMARY KEY, v text);"
            .. " CREATE TABLE planned_on (id int, v text); INSERT INTO planned_on VALUES (1, 'a');"
            .. " CREATE TABLE planned_off (id int, v text); INSERT INTO planned_off VALUES (1, 'a')")
        return { config = { workers = 1 } }
    end, { after = function() drop_database(DB) end })
    local off = suite.server { config = { workers = 1, db = { prepared_statements = false } } }

    -- Runs steps ({sql, params...}) on one pinned connection of srv; returns
    -- each step's answer and the statements prepared on that connection.
    local function session(srv, steps)
        local list = {}
        for i, step in ipairs(steps) do
            list[i] = { sql = step[1], params = { table.unpack(step, 2) } }
        end
        local res = post(srv, "/test/db/session", { db = DB, steps = list })
        assert.equal(200, res.status, res.body)
        return res.json.results, res.json.prepared
    end

    local function count_of(list, value)
        local n = 0
        for _, v in ipairs(list) do
            if v == value then n = n + 1 end
        end
        return n
    end

    local function both_clean()
        assert.same({}, on:unexpected_errors())
        assert.same({}, off:unexpected_errors())
    end

    it("prepares a statement once per connection and runs it by name after, with the same results", function()
        local sql = "SELECT $1::int + 1 AS n, $2::text AS s"
        local steps = { { sql, { int = "41" }, "x" }, { sql, { int = "1" }, "y" }, { sql, { int = "-1" }, "z" } }
        local on_results, on_prepared = session(on, steps)
        local off_results, off_prepared = session(off, steps)
        assert.same({ { n = 42, s = "x" } }, on_results[1].rows)
        assert.same({ { n = 2, s = "y" } }, on_results[2].rows)
        assert.same({ { n = 0, s = "z" } }, on_results[3].rows)
        assert.same(off_results, on_results)
        assert.equal(1, count_of(on_prepared, sql), "prepared once on the connection")
        assert.same({}, off_prepared)
        -- a statement without parameters is never prepared
        local _, prepared = session(on, { { "SELECT 7 AS seven" } })
        assert.equal(0, count_of(prepared, "SELECT 7 AS seven"))
        both_clean()
    end)

    it("keys a statement by its parameter types as well as its text", function()
        local sql = "SELECT pg_typeof($1)::text AS t"
        local steps = { { sql, { bytea_hex = "00ff" } }, { sql, "text" }, { sql, { bytea_hex = "01" } } }
        local on_results, on_prepared = session(on, steps)
        local off_results = session(off, steps)
        assert.same({ { t = "bytea" } }, on_results[1].rows)
        assert.same(off_results, on_results)
        assert.is_true(count_of(on_prepared, sql) >= 1)
        both_clean()
    end)

    it("reports an SQL error the same way, prepared or not, and never caches a failed prepare", function()
        local bad = "SELEC $1"
        local steps = {
            { bad, "x" }, { bad, "x" },
            { "SELECT $1::int AS n", "abc" }, { "SELECT $1::int AS n", { int = "5" } },
        }
        local on_results, on_prepared = session(on, steps)
        local off_results = session(off, steps)
        assert.same({ "sql", "42601" }, { on_results[1].error.kind, on_results[1].error.sqlstate })
        assert.matches("syntax error", on_results[1].error.message)
        assert.same({ "sql", "22P02" }, { on_results[3].error.kind, on_results[3].error.sqlstate })
        assert.same({ { n = 5 } }, on_results[4].rows)
        assert.same(off_results, on_results)
        assert.equal(0, count_of(on_prepared, bad))
        assert.equal(1, count_of(on_prepared, "SELECT $1::int AS n"))
        both_clean()
    end)

    it("runs a statement again after a failure inside a transaction and its ROLLBACK", function()
        local double = "SELECT $1::int * 2 AS n"
        local insert = "INSERT INTO items (v) VALUES ($1)"
        local steps = {
            { "BEGIN" },
            { insert, "tx1" },
            { "SELECT v FROM no_such_table_" .. RUN .. " WHERE v = $1", "x" },
            { double, { int = "3" } },
            { "ROLLBACK" },
            { double, { int = "3" } },
            { insert, "tx2" },
            { "SELECT count(*) AS n FROM items WHERE v = $1", "tx1" },
        }
        for _, srv in ipairs { on, off } do
            local results, prepared = session(srv, steps)
            assert.is_nil(results[2].error)
            assert.equal("42P01", results[3].error.sqlstate)
            assert.equal("25P02", results[4].error.sqlstate)
            assert.is_nil(results[5].error)
            assert.same({ { n = 6 } }, results[6].rows)
            assert.same(1, results[7].count)
            assert.same({ { n = 0 } }, results[8].rows)
            if srv == on then
                -- prepared inside the rolled-back transaction, and still there
                assert.equal(1, count_of(prepared, insert))
                assert.equal(1, count_of(prepared, double))
            end
        end
        assert.equal("2", psql(url, "SELECT count(*) FROM items WHERE v = 'tx2'"))
        assert.equal("0", psql(url, "SELECT count(*) FROM items WHERE v = 'tx1'"))
        both_clean()
    end)

    it("prepares a statement again after its cached plan went stale under DDL", function()
        for _, case in ipairs { { on, "planned_on" }, { off, "planned_off" } } do
            local srv, tbl = case[1], case[2]
            local sql = "SELECT * FROM " .. tbl .. " WHERE id = $1"
            local results, prepared = session(srv, {
                { sql, { int = "1" } },
                { "ALTER TABLE " .. tbl .. " ADD COLUMN extra int DEFAULT 7" },
                { sql, { int = "1" } },
                { sql, { int = "1" } },
            })
            assert.same({ { id = 1, v = "a" } }, results[1].rows)
            assert.is_nil(results[2].error)
            if srv == on then
                -- the one run that fails, on this connection only
                assert.equal("0A000", results[3].error.sqlstate)
                assert.matches("cached plan must not change result type", results[3].error.message)
                -- prepared again under a new name; the server keeps the
                -- stale one until the connection closes
                assert.equal(2, count_of(prepared, sql), "the stale statement left the cache")
            else
                assert.same({ { id = 1, v = "a", extra = 7 } }, results[3].rows)
                assert.same({}, prepared)
            end
            assert.same({ { id = 1, v = "a", extra = 7 } }, results[4].rows)
        end
        both_clean()
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        on:assert_stops_cleanly()
        off:assert_stops_cleanly()
    end)
end)

describe("database pool caps", function()
    local srv
    local DB = PREFIX .. "_caps"
    local A, B = PREFIX .. "_a", PREFIX .. "_b"
    local url

    srv = suite.server(function()
        assert(BASE_URL, "DATABASE_URL is not set (run the specs through spec/run.sh)")
        url = create_database(DB)
        create_database(A)
        create_database(B)
        psql(url, "CREATE SEQUENCE runs")
        return {
            config = {
                workers = 1,
                db = { pool_max = 2, acquire_timeout_ms = 20000, statement_timeout_ms = 1000 },
                tenants = { capacity = 2 },
                limits = { request_timeout_s = 20 },
            },
        }
    end, {
        after = function()
            drop_database(DB)
            drop_database(A)
            drop_database(B)
        end,
    })

    it("serves 20 concurrent pg_sleep(0.3) with pool_max = 2 and never opens a third connection", function()
        assert.equal(1, #srv:worker_pids())
        local done, samples, max_seen = 0, 0, 0
        local funcs = {}
        for i = 1, 20 do
            funcs[i] = function()
                local res, err = http.request {
                    port = srv.port, path = "/test/db/sleep?s=0.3&db=" .. DB, timeout = 30,
                    headers = { ["X-Request-Id"] = "cap" .. i },
                }
                done = done + 1
                return res or { error = err }
            end
        end
        funcs[21] = function()
            while done < 20 do
                local n = steeple_connections(url)
                samples = samples + 1
                if n > max_seen then max_seen = n end
                http.sleep(0.05)
            end
        end
        local started = http.now()
        local results = http.run(funcs, 60)
        local total = http.now() - started
        local pids = {}
        for i = 1, 20 do
            assert.is_true(results[i].ok, results[i].err)
            local res = results[i].value
            assert.is_nil(res.error, res.error)
            assert.equal(200, res.status, res.body)
            assert.equal(0.3, res.json.slept)
            pids[res.json.pid] = true
        end
        assert.is_true(results[21].ok, results[21].err)
        local distinct = 0
        for _ in pairs(pids) do distinct = distinct + 1 end
        assert.is_true(distinct <= 2, distinct .. " backends served the requests")
        assert.is_true(samples >= 3, "pg_stat_activity was sampled only " .. samples .. " times")
        assert.is_true(max_seen <= 2, "pg_stat_activity showed " .. max_seen .. " steeple connections")
        assert.equal(2, max_seen)
        -- 20 x 0.3 s on two connections cannot take less than 3 s
        assert.is_true(total >= 2.9, "20 sleeps of 0.3 s on 2 connections took only " .. total .. " s")
        assert.equal(2, steeple_connections(url))
        local gauges = wait_for(function()
            local m = srv:metrics()
            local idle = m['steeple_db_connections{server="main",state="idle"}']
            if idle == 2 then return m end
        end, 3)
        assert.is_table(gauges, "steeple_db_connections{state=\"idle\"} never showed the 2 idle connections")
        assert.equal(0, gauges['steeple_db_connections{server="main",state="active"}'])
        assert.same({}, srv:unexpected_errors())
    end)

    it("lets a request that released a connection to a waiter go on at once", function()
        local specs = {}
        for i = 1, 8 do
            specs[i] = { port = srv.port, path = "/test/db/handover?db=" .. DB, timeout = 20 }
        end
        for i, res in ipairs(http.concurrent(specs)) do
            assert.equal(200, res.status, "request " .. i .. ": " .. tostring(res.body))
            assert.same({ one = 1 }, res.json)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps at most tenants.capacity pools and closes the evicted pool's connections", function()
        local evictions = srv:metric("steeple_tenant_pool_evictions_total")
        assert.equal(2, steeple_connections(url))
        for _, name in ipairs { A, B } do
            local res = get(srv, "/test/db/pool?name=" .. name)
            assert.equal(200, res.status, res.body)
            assert.same({ db = name }, res.json)
        end
        -- the pool of DB, least recently used, is retired and its idle connections closed
        assert.equal(evictions + 1, srv:metric("steeple_tenant_pool_evictions_total"))
        assert.equal(0, wait_for(function()
            local n = steeple_connections(url)
            return n == 0 and n
        end, 5) or steeple_connections(url))
        local res = get(srv, "/test/db/pool?name=" .. DB)
        assert.equal(200, res.status, res.body)
        assert.equal(evictions + 2, srv:metric("steeple_tenant_pool_evictions_total"))
        assert.equal(0, wait_for(function()
            local n = steeple_connections(url_for(BASE_URL, A))
            return n == 0 and n
        end, 5) or steeple_connections(url_for(BASE_URL, A)))
        local pools = wait_for(function()
            local n = srv:metric("steeple_tenant_pools")
            return n == 2 and n
        end, 3)
        assert.equal(2, pools or srv:metric("steeple_tenant_pools"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers 503 with Retry-After when a handler's statement passes statement_timeout_ms", function()
        local res = get(srv, "/test/db/sleep?s=3&db=" .. DB)
        assert_generic_error(res, "service_unavailable", 503)
        assert.equal("1", res.headers["retry-after"])
        assert.truthy(srv:wait_entry({ msg = "database unavailable", sqlstate = "57014" }, 2))
        assert.same({}, srv:unexpected_errors())
    end)

    it("sends statement_timeout_ms to the server and fails a statement past it once", function()
        local res = post(srv, "/test/db/query", { db = DB, sql = "SHOW statement_timeout" })
        assert.same({ { statement_timeout = "1s" } }, res.json.rows)
        for attempt = 1, 5 do
            res = post(srv, "/test/db/query", { db = DB, sql = "SELECT nextval('runs') AS n, pg_sleep(3)" })
            if res.status == 200 then
                assert.is_table(res.json.error, "a 3 s statement beat a 1 s statement timeout: " .. res.body)
                assert.equal("57014", res.json.error.sqlstate)
            else
                assert_generic_error(res, "service_unavailable", 503)
            end
            -- (a statement that ran its 3 s would have answered rows, not 57014)
            assert.equal(tostring(attempt), psql(url, RUNS_SQL),
                "attempt " .. attempt .. ": the timed-out statement ran again")
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("database server connection cap", function()
    local srv
    local DB = PREFIX .. "_smc"
    local url

    srv = suite.server(function()
        assert(BASE_URL, "DATABASE_URL is not set (run the specs through spec/run.sh)")
        url = create_database(DB)
        return {
            config = {
                workers = 2,
                db = { pool_max = 4, server_max_connections = 2, acquire_timeout_ms = 20000 },
                limits = { request_timeout_s = 20 },
            },
        }
    end, {
        after = function()
            drop_database(DB)
        end,
    })

    it("shares server_max_connections between the workers", function()
        assert.equal(2, #srv:worker_pids())
        local done, max_seen = 0, 0
        local funcs = {}
        for i = 1, 12 do
            funcs[i] = function()
                local res, err = http.request { port = srv.port, path = "/test/db/sleep?s=0.3&db=" .. DB, timeout = 30 }
                done = done + 1
                return res or { error = err }
            end
        end
        funcs[13] = function()
            while done < 12 do
                max_seen = math.max(max_seen, steeple_connections(url))
                http.sleep(0.05)
            end
        end
        local results = http.run(funcs, 60)
        assert.is_true(results[13].ok, results[13].err)
        for i = 1, 12 do
            assert.is_true(results[i].ok, results[i].err)
            assert.equal(200, results[i].value.status, results[i].value.body or results[i].value.error)
        end
        assert.is_true(max_seen >= 1, "no steeple connection was ever seen")
        assert.is_true(max_seen <= 2, "pg_stat_activity showed " .. max_seen .. " steeple connections")
        assert.is_true(steeple_connections(url) <= 2)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("database acquire timeout", function()
    local srv = suite.server(function()
        assert(BASE_URL, "DATABASE_URL is not set (run the specs through spec/run.sh)")
        return {
            config = {
                workers = 1,
                db = { pool_max = 1, acquire_timeout_ms = 200 },
                limits = { request_timeout_s = 5 },
            },
        }
    end)

    it("answers 503 service_unavailable with Retry-After to requests that wait past acquire_timeout_ms", function()
        local before = srv:metric('steeple_db_acquire_timeouts_total{server="main"}')
        local specs = {}
        for i = 1, 10 do
            specs[i] = {
                port = srv.port, path = "/test/db/sleep?s=1", timeout = 10, headers = { ["X-Request-Id"] = "acq" .. i },
            }
        end
        local ok, unavailable = 0, 0
        for i, res in ipairs(http.concurrent(specs, 30)) do
            assert.is_nil(res.error, res.error)
            if res.status == 200 then
                ok = ok + 1
                assert.equal(1, res.json.slept)
            else
                unavailable = unavailable + 1
                assert_generic_error(res, "service_unavailable", 503)
                assert.equal("acq" .. i, res.json.error.requestId)
                local retry = tonumber(res.headers["retry-after"])
                assert.is_truthy(retry, "no Retry-After on a 503")
                assert.is_true(retry >= 1 and math.type(retry) == "integer",
                    "Retry-After: " .. res.headers["retry-after"])
            end
        end
        assert.is_true(ok >= 1, "no request got the connection")
        assert.is_true(unavailable >= 1, "no request timed out waiting")
        assert.equal(10, ok + unavailable)
        -- each 503 is the acquire timeout's, not a wait for the connection
        assert.equal(before + unavailable, srv:metric('steeple_db_acquire_timeouts_total{server="main"}'))
        assert.equal(unavailable, srv:wait_log_count('"msg":"database unavailable"', unavailable, 2))
        -- the pool works again afterwards
        assert.equal(200, get(srv, "/test/db/sleep?s=0").status)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("database failures (private cluster)", function()
    local srv
    local DIR = "var/test-pg-faults-" .. RUN
    local url
    local stopped_pid -- a postmaster held with SIGSTOP

    local function pg(cmd)
        local out, ok = capture(string.format("cd %s && bash scripts/pg.sh --dir %s %s 2>&1",
            quote(server.ROOT), quote(DIR), cmd))
        assert(ok, "pg.sh " .. cmd .. " failed:\n" .. out)
        return (out:gsub("%s+$", ""))
    end

    local function postmaster_pid()
        local f = assert(io.open(server.ROOT .. "/" .. DIR .. "/data/postmaster.pid"))
        local pid = tonumber(f:read("l"))
        f:close()
        return pid
    end

    setup(function()
        pg("start")
        url = pg("url")
        srv = server.start {
            env = { DATABASE_URL = url },
            config = {
                workers = 1,
                db = { breaker_failures = 3, breaker_open_s = 2, connect_timeout_ms = 1000, acquire_timeout_ms = 3000 },
                limits = { request_timeout_s = 5 },
            },
        }
    end)

    teardown(function()
        if stopped_pid then os.execute("kill -CONT " .. stopped_pid .. " 2>/dev/null") end
        if srv then srv:stop(5) end
        server.cleanup()
        pcall(pg, "destroy")
    end)

    before_each(function()
        srv:mark()
    end)

    it("serves the next queries after pg_terminate_backend of all its connections", function()
        local specs = {}
        for i = 1, 4 do specs[i] = { port = srv.port, path = "/test/db/sleep?s=0.2" } end
        local old = {}
        for _, res in ipairs(http.concurrent(specs)) do
            assert.equal(200, res.status, res.body or res.error)
            old[res.json.pid] = true
        end
        local killed = psql_number(url, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done"
            .. " FROM pg_stat_activity WHERE application_name = 'steeple') AS t WHERE done")
        assert.is_true(killed >= 1, "no steeple connection to terminate")
        assert.equal(0, wait_for(function()
            local n = psql_number(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'steeple'")
            return n == 0 and n
        end, 5) or "connections left")
        for _ = 1, 5 do
            local res = get(srv, "/test/db/sleep?s=0")
            assert.equal(200, res.status, res.body)
            assert.is_nil(old[res.json.pid], "a terminated backend answered")
        end
        for _, res in ipairs(http.concurrent(specs)) do
            assert.equal(200, res.status, res.body or res.error)
        end
        local res = get(srv, "/ready")
        assert.equal(200, res.status)
        assert.same({ status = "ready" }, res.json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers /ready 503 within the connect timeout while PostgreSQL accepts but never answers", function()
        psql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'steeple'")
        assert.equal(0, wait_for(function()
            local n = psql_number(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'steeple'")
            return n == 0 and n
        end, 5) or "connections left")
        stopped_pid = postmaster_pid()
        assert.is_true(os.execute("kill -STOP " .. stopped_pid) == true)
        local res = get(srv, "/ready", 10)
        os.execute("kill -CONT " .. stopped_pid)
        stopped_pid = nil
        assert.equal(503, res.status)
        assert.same({ status = "unavailable" }, res.json)
        assert.truthy(res.headers["retry-after"])
        assert.is_true(res.elapsed >= 0.9, "answered after " .. res.elapsed .. " s, before the 1 s connect timeout")
        -- the connect timeout answered it (not the acquire or request timeout)
        assert.truthy(srv:wait_log("cannot connect to main/steeple: connect timeout", 5))
        -- one failure does not open the breaker; PostgreSQL answers again
        local ready = wait_for(function() return get(srv, "/ready").status == 200 end, 5, 0.1)
        assert.is_true(ready, "/ready did not come back after SIGCONT")
        assert.is_nil(srv:log_contains("failing fast"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers 503 when PostgreSQL stops and opens the breaker after breaker_failures failed connects", function()
        local failed_before = srv:log_count("cannot connect to main/steeple")
        local _, log_from = srv:log_lines()
        pg("stop")
        local res = get(srv, "/ready", 10)
        assert.equal(503, res.status)
        assert.same({ status = "unavailable" }, res.json)
        -- refused at once: the failed connect is not the connect timeout's
        local failed
        wait_for(function()
            for _, line in ipairs((srv:log_lines(log_from))) do
                if line.text:find("cannot connect to main/steeple", 1, true) then failed = line.text end
            end
            return failed
        end, 5)
        assert.truthy(failed, "no failed connect was logged")
        assert.is_nil(failed:find("connect timeout", 1, true), failed)

        local line
        for _ = 1, 5 do
            line = srv:log_contains("failing fast")
            if line then break end
            res = get(srv, "/ready", 10)
            assert.equal(503, res.status)
        end
        line = line or srv:wait_log("failing fast", 2)
        local opened_at = http.now()
        assert.truthy(line, "the breaker never opened")
        assert.matches("database server main unavailable %(.*%); failing fast for 2 s", line)
        local entry
        for _, e in ipairs(srv:entries { worker = 0 }) do
            if tostring(e.msg):find("failing fast", 1, true) then entry = e end
        end
        assert.equal("warn", entry and entry.level)
        assert.equal(failed_before + 3, srv:log_count("cannot connect to main/steeple"))

        -- while open: 503 with Retry-After at once, without trying to connect
        local connects = srv:log_count("cannot connect")
        local last_done, done_at = opened_at, {}
        for i = 1, 5 do
            res = assert(http.request {
                port = srv.port, path = "/test/db/sleep?s=0", headers = { ["X-Request-Id"] = "open" .. i },
            })
            last_done = http.now()
            done_at[i] = last_done
            assert_generic_error(res, "service_unavailable", 503)
            local retry = tonumber(res.headers["retry-after"])
            assert.is_true(retry ~= nil and retry >= 1 and retry <= 2,
                "Retry-After: " .. tostring(res.headers["retry-after"]))
            assert.equal(503, get(srv, "/ready").status)
        end
        if last_done < opened_at + 1.5 then
            assert.equal(connects, srv:log_count("cannot connect"), "connects were tried while the breaker was open")
        end
        -- each failed at the open breaker, without trying to connect (those
        -- answered well before breaker_open_s let a probe through)
        for i = 1, 5 do
            local e = srv:wait_entry({ msg = "database unavailable", requestId = "open" .. i }, 5)
            assert.truthy(e, "no log line for open" .. i)
            if done_at[i] < opened_at + 1.5 then
                assert.equal("database server main is unavailable", e.error)
            end
        end

        local open = wait_for(function() return srv:metric('steeple_circuit_open{server="main"}') == 1 end,
            math.max(0.5, opened_at + 3 - http.now()), 0.05)
        assert.is_true(open, 'steeple_circuit_open{server="main"} never showed 1')
        assert.same({}, srv:unexpected_errors())
    end)

    it("returns to ready by itself once PostgreSQL is back", function()
        pg("start")
        local started = http.now()
        -- within breaker_open_s (2 s) and a generous margin
        local ready = wait_for(function() return get(srv, "/ready").status == 200 end, 2 + 15, 0.1)
        local took = http.now() - started
        assert.is_true(ready, "/ready still not 200 " .. took .. " s after PostgreSQL started")
        assert.truthy(srv:wait_log("database server main answers again; breaker closed", 2))
        local res = get(srv, "/test/db/sleep?s=0")
        assert.equal(200, res.status, res.body)
        local closed = wait_for(function() return srv:metric('steeple_circuit_open{server="main"}') == 0 end, 3)
        assert.is_true(closed, 'steeple_circuit_open{server="main"} stayed 1')
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
