-- GET /metrics: only allowed client addresses read it (by the TCP peer, never
-- X-Forwarded-For), database servers appear under configured names (never
-- host:port), and a first scrape of a fresh server already holds every
-- family of API.md in well-formed Prometheus text.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local socket = require "socket"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local PG_PORT = assert(BASE_URL:match("@[^/]*:(%d+)/"), "the test cluster's URL has no port")

-- API.md, Operations: every family /metrics must hold; labelled ones carry
-- the labels of their name.
local FAMILIES <const> = {
    { name = "steeple_http_requests_total", type = "counter", labelled = true },
    { name = "steeple_http_request_duration_seconds", type = "histogram" },
    { name = "steeple_db_connections", type = "gauge", labelled = true },
    { name = "steeple_tenant_pools", type = "gauge" },
    { name = "steeple_tenant_pool_evictions_total", type = "counter" },
    { name = "steeple_db_acquire_timeouts_total", type = "counter", labelled = true },
    { name = "steeple_circuit_open", type = "gauge", labelled = true },
    { name = "steeple_webhooks_total", type = "counter", labelled = true },
    { name = "steeple_spool_pending", type = "gauge" },
    { name = "steeple_script_reloads_total", type = "counter", labelled = true },
    { name = "steeple_login_failures_total", type = "counter" },
}

-- Prometheus text format 0.0.4, strictly ------------------------------------

local METRIC_NAME <const> = "^[%a_:][%w_:]*$"
local TYPES <const> = { counter = true, gauge = true, histogram = true, summary = true, untyped = true }
local SUFFIXES <const> = {
    counter = { "" }, gauge = { "" }, untyped = { "" },
    histogram = { "_bucket", "_sum", "_count" }, summary = { "", "_sum", "_count" },
}

-- Reads the label block that starts after "{" at pos; returns the labels and
-- the position after "}", or raises.
local function parse_labels(line, pos)
    local labels = {}
    while line:sub(pos, pos) ~= "}" do
        local name, after = line:match("^([%a_][%w_]*)=\"()", pos)
        assert(name, "bad label at: " .. line:sub(pos))
        assert(labels[name] == nil, "label repeated: " .. name)
        local value, i = {}, after
        while true do
            local c = line:sub(i, i)
            assert(c ~= "", "unterminated label value in: " .. line)
            if c == '"' then break end
            if c == "\\" then
                local e = line:sub(i + 1, i + 1)
                assert(e == "\\" or e == '"' or e == "n", "bad escape in: " .. line)
                value[#value + 1] = e == "n" and "\n" or e
                i = i + 2
            else
                value[#value + 1] = c
                i = i + 1
            end
        end
        labels[name] = table.concat(value)
        pos = i + 1
        local sep = line:sub(pos, pos)
        assert(sep == "," or sep == "}", "expected , or } after a label in: " .. line)
        if sep == "," then pos = pos + 1 end
    end
    return labels, pos + 1
end

local function parse_value(text)
    if text == "+Inf" then return math.huge end
    if text == "-Inf" then return -math.huge end
    if text == "NaN" then return 0 / 0 end
    assert(text:match("^[-+]?%d+%.?%d*$") or text:match("^[-+]?%d+%.?%d*[eE][-+]?%d+$"),
        "bad sample value: " .. text)
    return tonumber(text)
end

-- The family of a sample name under the current family, or raises.
local function check_sample_name(name, family)
    assert(family, "sample before any TYPE line: " .. name)
    for _, suffix in ipairs(SUFFIXES[family.type]) do
        if name == family.name .. suffix then return end
    end
    error("sample " .. name .. " does not follow its family's TYPE (current family: " .. family.name .. ")")
end

-- Parses exposition text into { [family] = { name, type, help, samples = {
-- { name, labels, value } } } }, raising at the first line that breaks the
-- format: every line is a HELP or TYPE comment or `name{labels} value`,
-- each family's HELP and TYPE come once and before its samples, and a
-- family's samples are contiguous, right after its TYPE.
local function parse_exposition(text)
    assert(text:sub(-1) == "\n", "the text does not end with a newline")
    local families, current, closed = {}, nil, {}
    local function enter(name)
        if current and current.name == name then return current end
        assert(not closed[name], "family " .. name .. " appears in two places")
        if current then closed[current.name] = true end
        current = { name = name, samples = {} }
        families[name] = current
        return current
    end
    for line in text:gmatch("([^\n]*)\n") do
        assert(line ~= "", "empty line")
        local kind, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
        if kind == "HELP" then
            assert(name:match(METRIC_NAME), "bad family name: " .. name)
            local f = enter(name)
            assert(f.help == nil and #f.samples == 0, "HELP of " .. name .. " repeated or after its samples")
            f.help = rest
        elseif kind == "TYPE" then
            assert(name:match(METRIC_NAME), "bad family name: " .. name)
            assert(TYPES[rest], "bad type: " .. line)
            local f = enter(name)
            assert(f.type == nil and #f.samples == 0, "TYPE of " .. name .. " repeated or after its samples")
            f.type = rest
        else
            assert(line:sub(1, 1) ~= "#", "a comment that is neither HELP nor TYPE: " .. line)
            local sample, pos = line:match("^([%a_:][%w_:]*)()")
            assert(sample, "bad sample line: " .. line)
            local labels = {}
            if line:sub(pos, pos) == "{" then labels, pos = parse_labels(line, pos + 1) end
            local value = line:match("^ (%S+)$", pos)
            assert(value, "expected one space and a value (no timestamp) in: " .. line)
            assert(current and current.type, "sample before its family's TYPE: " .. line)
            check_sample_name(sample, current)
            current.samples[#current.samples + 1] = { name = sample, labels = labels, value = parse_value(value) }
        end
    end
    return families
end

-- The value of the sample `name` whose labels are exactly `labels`, or nil.
local function sample(families, family, name, labels)
    local f = families[family]
    if f == nil then return nil end
    for _, s in ipairs(f.samples) do
        local same = s.name == name
        for k, v in pairs(labels or {}) do same = same and s.labels[k] == v end
        for k in pairs(s.labels) do same = same and (labels or {})[k] ~= nil end
        if same then return s.value end
    end
    return nil
end

-- Every label value of the text that looks like a network address.
local function addresses_in_labels(families)
    local found = {}
    for _, f in pairs(families) do
        for _, s in ipairs(f.samples) do
            for k, v in pairs(s.labels) do
                if v:find(":%d+$") or v:find("%d+%.%d+%.%d+%.%d+") or v:find("localhost") or v:find(PG_PORT, 1, true) then
                    found[#found + 1] = string.format('%s{%s="%s"}', s.name, k, v)
                end
            end
        end
    end
    return found
end

-- Clients --------------------------------------------------------------------

local function request_on(sock, path, headers)
    local lines = { "GET " .. path .. " HTTP/1.1", "Host: localhost", "Connection: close" }
    for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
    assert(sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n"))
    local res, err = http.read_response(sock, 10 * server.SLOW)
    sock:close()
    return res, err
end

-- GET path on 127.0.0.1:port from the local address `source` (e.g. 127.0.0.2).
local function get_from(source, port, path, headers)
    local sock = socket.tcp()
    assert(sock:bind(source, 0))
    sock:settimeout(10 * server.SLOW)
    assert(sock:connect("127.0.0.1", port))
    return assert(request_on(sock, path, headers))
end

-- GET path on [::1]:port; nil, message while nothing listens there.
local function get_v6(port, path)
    local sock = socket.tcp6()
    sock:settimeout(10 * server.SLOW)
    local ok, err = sock:connect("::1", port)
    if not ok then
        sock:close()
        return nil, err
    end
    return request_on(sock, path)
end

local function assert_not_found(res)
    assert.equal(404, res.status)
    assert.matches("^application/json", res.headers["content-type"])
    assert.is_table(res.json, "not the JSON error body: " .. tostring(res.body))
    assert.equal("not_found", res.json.error.code)
    assert.is_nil(res.body:find("steeple_", 1, true))
end

-- Specs ----------------------------------------------------------------------

describe("a first scrape of a fresh server", function()
    local srv, res

    setup(function()
        -- main, and a second tenant server that nothing uses (it is never connected)
        srv = server.start {
            wait = false,
            config = { workers = 2 },
            env = { STEEPLE_TENANT_DATABASE_URLS = BASE_URL .. ",postgresql://steeple@127.0.0.1:1/postgres" },
        }
        -- the first request the server answers is this scrape: a refused connect is no request
        server.wait_until(function()
            res = http.request { port = srv.port, path = "/metrics", timeout = 5 }
            return res ~= nil
        end, 10)
    end)

    teardown(function()
        if srv then srv:stop(5) end
        server.cleanup()
    end)

    it("is well-formed Prometheus text", function()
        assert.is_table(res, "the server never answered")
        assert.equal(200, res.status)
        assert.equal("text/plain; version=0.0.4", res.headers["content-type"])
        local ok, err = pcall(parse_exposition, res.body)
        assert(ok, tostring(err) .. "\n--- /metrics ---\n" .. res.body)
    end)

    it("holds every family of API.md with HELP and TYPE, and a zero sample where it has no labels", function()
        local families = parse_exposition(res.body)
        for _, want in ipairs(FAMILIES) do
            local f = families[want.name]
            assert(f, want.name .. " is missing\n--- /metrics ---\n" .. res.body)
            assert.equal(want.type, f.type, want.name)
            assert(f.help and #f.help > 0, want.name .. " has no HELP text")
            if not want.labelled then
                local name = want.type == "histogram" and want.name .. "_count" or want.name
                assert.equal(0, sample(families, want.name, name, {}), want.name .. " has no zero sample")
            end
        end
    end)

    it("has zero samples for every configured server and the known label values", function()
        local families = parse_exposition(res.body)
        for _, name in ipairs({ "main", "tenant2" }) do
            for _, state in ipairs({ "idle", "active", "connecting" }) do
                assert.equal(0, sample(families, "steeple_db_connections", "steeple_db_connections",
                    { server = name, state = state }), name .. " " .. state)
            end
            assert.equal(0, sample(families, "steeple_circuit_open", "steeple_circuit_open", { server = name }), name)
            assert.equal(0, sample(families, "steeple_db_acquire_timeouts_total", "steeple_db_acquire_timeouts_total",
                { server = name }), name)
        end
        for _, result in ipairs({ "ok", "error" }) do
            assert.equal(0, sample(families, "steeple_script_reloads_total", "steeple_script_reloads_total",
                { result = result }), result)
        end
        for _, result in ipairs({ "stored", "duplicate", "updated", "ignored", "unroutable",
                                  "invalid_signature", "spooled", "spool_failed" }) do
            assert.equal(0, sample(families, "steeple_webhooks_total", "steeple_webhooks_total",
                { result = result }), result)
        end
        assert.same({}, addresses_in_labels(families))
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("who may read /metrics", function()
    local srv = suite.server {
        config = { metrics = { allow = "127.0.0.1/32, ::1" }, auth = { trusted_proxies = "127.0.0.2" } },
    }

    it("answers an allowed address", function()
        local res = get_from("127.0.0.1", srv.port, "/metrics")
        assert.equal(200, res.status)
        assert.truthy(res.body:find("# TYPE steeple_http_requests_total counter", 1, true))
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers any other address 404 not_found, whatever X-Forwarded-For says", function()
        assert_not_found(get_from("127.0.0.2", srv.port, "/metrics"))
        -- 127.0.0.2 is a trusted proxy for the rate limits: that changes nothing here
        assert_not_found(get_from("127.0.0.2", srv.port, "/metrics", { ["X-Forwarded-For"] = "127.0.0.1" }))
        assert_not_found(get_from("127.0.0.2", srv.port, "/metrics", { ["X-Forwarded-For"] = "::1, 127.0.0.1" }))
        -- and the rest of the API is open to it as before
        assert.equal(200, get_from("127.0.0.2", srv.port, "/health").status)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("/metrics over IPv6", function()
    local srv

    local function metrics_v6()
        return get_v6(srv.port, "/metrics")
    end

    setup(function()
        srv = server.start { wait = false, config = { listen = "::1", metrics = { allow = "127.0.0.0/8" } } }
        assert(server.wait_until(function() return get_v6(srv.port, "/health") ~= nil end, 10),
            "the server never answered on [::1]")
    end)

    teardown(function()
        if srv then srv:stop(5) end
        server.cleanup()
    end)

    it("refuses ::1 when only 127.0.0.0/8 is allowed, and answers it once a reload allows ::1", function()
        srv:mark()
        assert_not_found(assert(metrics_v6()))
        srv.config.metrics.allow = "10.0.0.0/8, ::/127"
        server.write_config(srv.config, srv.dir)
        assert.is_true(srv:sighup())
        assert.is_true(server.wait_until(function()
            local res = metrics_v6()
            return res ~= nil and res.status == 200
        end, 10), "::1 was still refused after the reload")
        assert.truthy(srv:wait_log("scripts reloaded"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("database servers in /metrics", function()
    local reg, srv, legacy, named, unnamed
    local dbs = {}
    -- the tenant server that listens on "localhost" gets a name; its address
    -- is what registrations stored before it had one
    local EAST_ADDRESS <const> = "localhost:" .. PG_PORT
    local EAST_URL <const> = "postgresql://steeple@localhost:" .. PG_PORT .. "/postgres"
    local UNUSED_URL <const> = "postgresql://steeple@127.0.0.1:1/postgres"

    local function tenant(name, server_key, dbname)
        dbs[#dbs + 1] = dbname
        assert(select(2, pg.psql(BASE_URL, "CREATE DATABASE " .. dbname)))
        return (pg.psql(reg.url, string.format("INSERT INTO tenants (church_name, status, db_server, db_name) "
            .. "VALUES ('%s', 'active', '%s', '%s') RETURNING id", name, server_key, dbname)))
    end

    srv = suite.server(function()
        reg = auth.registry("metricnames")
        legacy = tenant("legacy", EAST_ADDRESS, "tenant_mnl" .. auth.STAMP)
        named = tenant("named", "east", "tenant_mnn" .. auth.STAMP)
        unnamed = tenant("unnamed", "127.0.0.1:1", "tenant_mnu" .. auth.STAMP)
        return {
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = "east=" .. EAST_URL .. "," .. UNUSED_URL },
        }
    end, {
        after = function()
            reg:drop()
        end,
    })

    it("still finds a church recorded by its server's address after the server got a name", function()
        for id, dbname in pairs({ [legacy] = dbs[1], [named] = dbs[2] }) do
            local res = assert(http.request { port = srv.port, path = "/test/tenant/" .. id })
            assert.equal(200, res.status, res.body)
            assert.equal(dbname, res.json.db)
        end
        -- placement counts both of east's churches: the unused server, with one, is next
        local res = assert(http.request { port = srv.port, path = "/test/place" })
        assert.equal(200, res.status, res.body)
        assert.equal("127.0.0.1:1", res.json.server)
        assert.truthy(unnamed)
        assert.same({}, srv:unexpected_errors())
    end)

    it("labels servers by name, never by host:port", function()
        -- east was used above: its idle connections show once the pools report (every second)
        local res, families
        server.wait_until(function()
            res = get_from("127.0.0.1", srv.port, "/metrics")
            families = parse_exposition(res.body)
            return (sample(families, "steeple_db_connections", "steeple_db_connections",
                { server = "east", state = "idle" }) or 0) > 0
        end, 5)
        assert.equal(200, res.status)
        assert.is_true(sample(families, "steeple_db_connections", "steeple_db_connections",
            { server = "east", state = "idle" }) > 0)
        -- tenant2 is the unnamed second entry
        assert.equal(0, sample(families, "steeple_circuit_open", "steeple_circuit_open", { server = "tenant2" }))
        assert.equal(0, sample(families, "steeple_circuit_open", "steeple_circuit_open", { server = "main" }))
        assert.same({}, addresses_in_labels(families))
        assert.is_nil(res.body:find("localhost", 1, true))
        assert.is_nil(res.body:find(":" .. PG_PORT, 1, true))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("steeple_broadcast_stall_seconds", function()
    local reg, church, list_id

    local srv = suite.server(function()
        reg = auth.registry("metricstall")
        -- a call to Telnyx would be refused at once, and not tried again; no quiet hours
        return {
            config = { messaging = { dispatch_interval_s = 1, quiet_start = "00:00", quiet_end = "00:00" },
                       telnyx = { api_base = "http://127.0.0.1:1", send_attempts = 1, timeout_ms = 2000 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false },
        }
    end, {
        after = function()
            reg:drop()
        end,
    })

    local function mark(set)
        assert(select(2, pg.psql(reg.url, "UPDATE broadcast_tenants SET " .. set
            .. " WHERE tenant_id = '" .. church.id .. "'")))
    end

    local function stall_becomes(ok, what)
        local value
        local done = server.wait_until(function()
            value = srv:metric("steeple_broadcast_stall_seconds")
            return ok(value)
        end, 10)
        assert(done, what .. ": steeple_broadcast_stall_seconds reads " .. tostring(value))
        return value
    end

    it("reads 0 while the church's broadcast waits for its time", function()
        church = reg:church(srv, "stall", { phoneNumber = "+15559400001" })
        local res = auth.call(srv, "POST", "/api/lists", church.token, { name = "everyone" })
        assert.equal(201, res.status, res.body)
        list_id = res.json.list.id
        res = auth.call(srv, "POST", "/api/broadcasts", church.token, {
            text = "Tomorrow", lists = { list_id }, sendAt = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 86400),
        })
        assert.equal(201, res.status, res.body)
        -- the first turn finds nothing to send before tomorrow: no wait counts
        assert.truthy(server.wait_until(function()
            return reg:count("SELECT count(*) FROM broadcast_tenants WHERE progress_due_at > now() + interval '1 hour'") == 1
        end, 10), "the church's turn never moved its mark")
        assert.equal(0, stall_becomes(function(v) return v == 0 end, "a broadcast waiting for tomorrow"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("reads how long a church has waited for a turn that makes progress", function()
        -- as when every turn of the church fails (each takes its lease, due_at, and
        -- leaves progress_due_at behind) or no dispatcher takes it
        mark("due_at = now() + interval '1 hour', progress_due_at = now() - interval '300 seconds'")
        local v = stall_becomes(function(x) return x >= 300 end, "a church waiting 5 minutes")
        assert.is_true(v < 330, "read " .. v)
        -- a suspended church sends nothing: it is not waited for
        assert(select(2, pg.psql(reg.url, "UPDATE tenants SET status = 'suspended' WHERE id = '" .. church.id .. "'")))
        stall_becomes(function(x) return x == 0 end, "the church suspended")
        assert(select(2, pg.psql(reg.url, "UPDATE tenants SET status = 'active' WHERE id = '" .. church.id .. "'")))
        stall_becomes(function(x) return x >= 300 end, "the church active again")
        assert.same({}, srv:unexpected_errors())
    end)

    it("reads 0 again once a turn of the church has made progress", function()
        mark("due_at = now()")
        stall_becomes(function(x) return x == 0 end, "after the church's turn")
        assert.equal(1, reg:count("SELECT count(*) FROM broadcast_tenants WHERE progress_due_at > now() + interval '1 hour'"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("grows while every sender of the church's turns fails, and drops once a turn goes through", function()
        local res = auth.call(srv, "POST", "/api/contacts", church.token,
            { phoneNumber = "+15559400002", consent = "opted_in", lists = { list_id } })
        assert.equal(201, res.status, res.body)
        -- the senders take their pace from the registry's send_pacing: without it each one fails
        assert(select(2, pg.psql(reg.url, "ALTER TABLE send_pacing RENAME TO send_pacing_away")))
        res = auth.call(srv, "POST", "/api/broadcasts", church.token, { text = "Now", lists = { list_id } })
        assert.equal(201, res.status, res.body)
        local id = res.json.broadcast.id
        stall_becomes(function(x) return x >= 4 end, "senders failing")
        assert.truthy(srv:log_contains("a broadcast sender stopped"))
        -- the turns went on all along: only progress_due_at stayed behind
        assert.equal(1, reg:count("SELECT count(*) FROM broadcast_tenants WHERE due_at > progress_due_at"))
        assert(select(2, pg.psql(reg.url, "ALTER TABLE send_pacing_away RENAME TO send_pacing")))
        -- the recipient a failed sender claimed comes back when its lease ends:
        -- end it now, and let the church's next turn come at once
        assert(select(2, pg.psql(pg.url_of(church.db),
            "UPDATE broadcast_recipients SET lease_until = now() WHERE state = 'sending'")))
        mark("due_at = now()")
        -- that turn calls Telnyx (refused: the recipient fails, the broadcast is done)
        assert.truthy(server.wait_until(function()
            return auth.get(srv, "/api/broadcasts/" .. id, church.token).json.broadcast.status == "done"
        end, 15), "the broadcast never finished")
        assert.equal(0, stall_becomes(function(x) return x == 0 end, "after a turn that called Telnyx"))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
