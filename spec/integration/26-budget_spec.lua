-- Many churches under one connection budget: the budget of a server is shared
-- by the node's workers and spent without thrashing. Connections are counted
-- as PostgreSQL sees them (pg_stat_activity) and by steeple_db_connects_total;
-- then the faults: a database dropped while its pool is open, and a server at
-- its own max_connections.
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, psql_file, url_of = pg.psql, pg.psql_file, pg.url_of
local N <const> = 200
local TAG <const> = os.time() % 100000
local ENV = { STEEPLE_TENANT_DATABASE_URLS = false }

-- steeple's backends as PostgreSQL sees them: { [pid] = datname }, and how
-- many there are.
local function backends(url)
    local out = assert(psql(url or BASE_URL,
        "SELECT pid, datname FROM pg_stat_activity WHERE application_name = 'steeple'"))
    local set, n = {}, 0
    for pid, datname in out:gmatch("(%d+)|([%w_]+)") do
        set[pid] = datname
        n = n + 1
    end
    return set, n
end

-- steeple's connections per database: { [datname] = count }.
local function per_database()
    local out = assert(psql(BASE_URL, "SELECT datname, count(*) FROM pg_stat_activity"
        .. " WHERE application_name = 'steeple' GROUP BY datname"))
    local counts = {}
    for datname, n in out:gmatch("([%w_]+)|(%d+)") do counts[datname] = tonumber(n) end
    return counts
end

-- The sum of a metric family's series (every reason) on server main.
local function family_sum(srv, family)
    local total = 0
    for key, v in pairs(srv:metrics()) do
        if key:find("^" .. family .. "{server=\"main\"") then total = total + v end
    end
    return total
end

local function count(statuses, res, err)
    local key = res and res.status or ("error: " .. tostring(err))
    statuses[key] = (statuses[key] or 0) + 1
end

local function only_200(statuses)
    local other = {}
    for k, n in pairs(statuses) do
        if k ~= 200 then other[#other + 1] = tostring(k) .. " x" .. n end
    end
    return #other == 0, table.concat(other, ", ")
end

describe("connection budget", function()
    local registry = "budgetspec_" .. TAG
    local ids, names = {}, {}
    local dropped = string.format("tenant_bd%ddropped", TAG)
    local dropped_id
    local srv

    local function start(config)
        config.db = config.db or {}
        config.db.url = url_of(registry)
        config.tenants = config.tenants or {}
        config.tenants.janitor_interval_s = 0 -- no registry work of its own during a count
        config.limits = config.limits or { request_timeout_s = 30 }
        local env = { DATABASE_URL = url_of(registry) }
        for k, v in pairs(ENV) do env[k] = v end
        srv = server.start { config = config, env = env }
        srv:mark()
        return srv
    end

    local function path(i, s)
        return "/test/tenant/" .. ids[i] .. (s and ("?s=" .. s) or "")
    end

    setup(function()
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE)")
        assert(select(2, psql(BASE_URL, "CREATE DATABASE " .. registry)))
        local env = { DATABASE_URL = url_of(registry) }
        for k, v in pairs(ENV) do env[k] = v end
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 120)))
        assert.equal(0, (server.run_binary({ "migrate", "tenants" }, env, 120)))
        local creates, inserts = {}, {}
        for i = 1, N + 1 do
            names[i] = i <= N and string.format("tenant_bg%d%03d", TAG, i) or dropped
            creates[#creates + 1] = string.format("DROP DATABASE IF EXISTS %s;\nCREATE DATABASE %s TEMPLATE steeple_template;",
                names[i], names[i])
            inserts[#inserts + 1] = string.format("('church %d', 'active', 'main', '%s')", i, names[i])
        end
        local out, ok = psql_file(BASE_URL, table.concat(creates, "\n"))
        assert(ok, out)
        local rows = assert(psql(url_of(registry), "INSERT INTO tenants (church_name, status, db_server, db_name) VALUES "
            .. table.concat(inserts, ", ") .. " RETURNING id"))
        for id in rows:gmatch("[%x-]+") do ids[#ids + 1] = id end
        assert.equal(N + 1, #ids)
        dropped_id = ids[N + 1]
    end)

    after_each(function()
        if srv then
            srv:assert_stops_cleanly()
            srv = nil
        end
    end)

    teardown(function()
        if srv then srv:stop(10) end
        local drops = {}
        for _, name in ipairs(names) do drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE);" end
        drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE);"
        drops[#drops + 1] = "DROP DATABASE IF EXISTS steeple_template WITH (FORCE);"
        psql_file(BASE_URL, table.concat(drops, "\n"))
        server.cleanup()
    end)

    it("keeps 20 busy churches on 2 workers within a budget of 40 without opening or closing a connection", function()
        start {
            workers = 2,
            db = { server_max_connections = 40 },
            tenants = { cache_ttl_s = 3600 }, -- the registry is read once per church and worker
        }
        local stop, statuses, before, after, settled = false, {}, nil, nil, false
        local funcs = {}
        for c = 1, 32 do
            funcs[c] = function()
                local k = c
                while not stop do
                    count(statuses, http.request { port = srv.port, path = path(k % 20 + 1), timeout = 30 })
                    k = k + 7
                end
            end
        end
        funcs[#funcs + 1] = function()
            -- warm-up: until no connect for 3 s (or the deadline)
            local last, quiet_since = family_sum(srv, "steeple_db_connects_total"), http.now()
            local deadline = http.now() + server.slow(60)
            while http.now() < deadline and not settled do
                http.sleep(0.5)
                local n = family_sum(srv, "steeple_db_connects_total")
                if n ~= last then last, quiet_since = n, http.now() end
                settled = http.now() - quiet_since >= 3
            end
            before = { backends = backends(), opened = last,
                       closed = family_sum(srv, "steeple_db_closes_total") }
            http.sleep(10)
            after = { backends = backends(), opened = family_sum(srv, "steeple_db_connects_total"),
                      closed = family_sum(srv, "steeple_db_closes_total") }
            stop = true
        end
        for _, r in ipairs(http.run(funcs, server.slow(150))) do assert.is_true(r.ok, r.err) end
        assert.is_true(settled, "connects never stopped during the warm-up")
        assert.same(before.backends, after.backends, "backends came or went while the load went on")
        assert.equal(before.opened, after.opened)
        assert.equal(before.closed, after.closed)
        local n = 0
        for _ in pairs(after.backends) do n = n + 1 end
        assert.is_true(n <= 40, n .. " connections over a budget of 40")
        local ok, other = only_200(statuses)
        assert.is_true(ok, "not every request answered 200: " .. other)
        assert.is_true((statuses[200] or 0) > 100, "the load ran only " .. tostring(statuses[200]) .. " requests")
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers every request of 200 churches within a budget of 24, never going over it", function()
        start {
            workers = 2,
            db = { server_max_connections = 24, acquire_timeout_ms = 10000 },
        }
        local order = {}
        for round = 1, 2 do
            for i = 1, N do order[#order + 1] = (i * 37 + round * 11) % N + 1 end
        end
        local next_i, running, statuses, peak = 1, 32, {}, 0
        local funcs = {}
        for c = 1, 32 do
            funcs[c] = function()
                while next_i <= #order do
                    local i = order[next_i]
                    next_i = next_i + 1
                    count(statuses, http.request { port = srv.port, path = path(i), timeout = 30 })
                end
                running = running - 1
            end
        end
        funcs[#funcs + 1] = function()
            while running > 0 do
                local _, n = backends()
                if n > peak then peak = n end
                http.sleep(0.05)
            end
        end
        for _, r in ipairs(http.run(funcs, server.slow(300))) do assert.is_true(r.ok, r.err) end
        local ok, other = only_200(statuses)
        assert.is_true(ok, "not every request answered 200: " .. other)
        assert.equal(#order, statuses[200])
        assert.is_true(peak <= 24, "peak of " .. peak .. " connections over the budget of 24")
        assert.is_true(peak > 2, "the load never used more than " .. peak .. " connections")
        assert.is_true(srv:metric('steeple_db_connects_total{server="main",reason="handover"}') > 0,
            "connections never moved from one church to another")
        assert.same({}, srv:unexpected_errors())
    end)

    it("gives a church busy after an idle period a connection while 50 others keep theirs", function()
        local BUDGET <const> = 60
        -- generous timeouts: the warm-up opens 60 connections, which a busy
        -- machine may take seconds to set up; a pool unused for 2 s is closed,
        -- so the idle church loses its connection while the others fill the budget
        start {
            workers = 1,
            db = { server_max_connections = BUDGET, acquire_timeout_ms = 10000, connect_timeout_ms = 10000 },
            tenants = { cache_ttl_s = 3600, idle_s = 2 },
        }
        local late = 51 -- the church that was idle
        local statuses, funcs = {}, {}
        for c = 1, 5 do -- one connection per church first, five at a time
            funcs[c] = function()
                for i = c, late, 5 do count(statuses, http.request { port = srv.port, path = path(i), timeout = 30 }) end
            end
        end
        for _, r in ipairs(http.run(funcs, server.slow(90))) do assert.is_true(r.ok, r.err) end
        assert.is_true(only_200(statuses))
        -- then three requests at a time each: their pools grow and fill the budget
        local stop
        stop, statuses, funcs = false, {}, {}
        for c = 1, 150 do
            funcs[c] = function()
                while not stop do
                    count(statuses, http.request { port = srv.port, path = path(c % 50 + 1, 0.05), timeout = 30 })
                end
            end
        end
        local filled
        funcs[#funcs + 1] = function()
            local deadline = http.now() + server.slow(30)
            while not filled and http.now() < deadline do
                http.sleep(0.2)
                local counts, _, n = per_database(), backends()
                filled = n == BUDGET and counts[names[late]] == nil
                for i = 1, 50 do filled = filled and (counts[names[i]] or 0) >= 1 end
            end
            stop = true
        end
        for _, r in ipairs(http.run(funcs, server.slow(90))) do assert.is_true(r.ok, r.err) end
        assert.is_true(filled, "the 50 churches never filled the budget (one connection each at least)"
            .. " without the idle church")
        assert.is_true(only_200(statuses))
        -- now one request at a time each; the idle church becomes busy
        stop, statuses, funcs = false, {}, {}
        local lowest, late_statuses = math.huge, {}
        for c = 1, 50 do
            funcs[c] = function()
                while not stop do count(statuses, http.request { port = srv.port, path = path(c), timeout = 30 }) end
            end
        end
        funcs[#funcs + 1] = function()
            http.sleep(1.5)
            for _ = 1, 20 do count(late_statuses, http.request { port = srv.port, path = path(late), timeout = 30 }) end
            stop = true
        end
        funcs[#funcs + 1] = function()
            while not stop do
                local counts = per_database()
                for i = 1, 50 do lowest = math.min(lowest, counts[names[i]] or 0) end
                http.sleep(0.05)
            end
        end
        for _, r in ipairs(http.run(funcs, server.slow(90))) do assert.is_true(r.ok, r.err) end
        local ok, other = only_200(late_statuses)
        assert.is_true(ok, "the church busy again was not served: " .. other)
        assert.is_true(only_200(statuses))
        assert.is_true(lowest >= 1 and lowest < math.huge, "a busy church lost its last connection (or none was sampled)")
        -- made room: an idle connection closed, or one given up as it came back
        local m = srv:metrics()
        assert.is_true((m['steeple_db_connects_total{server="main",reason="evict"}'] or 0)
            + (m['steeple_db_connects_total{server="main",reason="handover"}'] or 0) >= 1)
        assert.same({}, srv:unexpected_errors())
    end)

    it("does not stall other churches while a database dropped in the LRU refuses connections", function()
        start {
            workers = 1,
            db = { server_max_connections = 12 },
            tenants = { cache_ttl_s = 3600 },
        }
        local dropped_path = "/test/tenant/" .. dropped_id
        assert.equal(200, http.request { port = srv.port, path = dropped_path }.status)
        assert(psql(BASE_URL, "DROP DATABASE " .. dropped .. " WITH (FORCE)"))
        local stop, statuses, refused, funcs = false, {}, {}, {}
        for c = 1, 10 do
            funcs[c] = function()
                while not stop do count(statuses, http.request { port = srv.port, path = path(c), timeout = 30 }) end
            end
        end
        local started = http.now()
        for _ = 1, 8 do
            funcs[#funcs + 1] = function()
                while http.now() - started < 3 do
                    local res, err = http.request { port = srv.port, path = dropped_path, timeout = 30 }
                    count(refused, res, err)
                    if res then
                        assert.equal("service_unavailable", res.json.error.code)
                        assert.truthy(tonumber(res.headers["retry-after"]), "a 503 without Retry-After")
                    end
                end
            end
        end
        funcs[#funcs + 1] = function()
            http.sleep(3.5)
            stop = true
        end
        for _, r in ipairs(http.run(funcs, server.slow(90))) do assert.is_true(r.ok, r.err) end
        local elapsed = http.now() - started
        local ok, other = only_200(statuses)
        assert.is_true(ok, "other churches were not served: " .. other)
        assert.is_true((statuses[200] or 0) >= 10)
        for k in pairs(refused) do assert.equal(503, k) end
        assert.is_true((refused[503] or 0) > 0)
        -- the refusal is remembered for a second: at most one connect a second to it
        local attempts = srv:log_count("cannot connect to main/" .. dropped)
        assert.is_true(attempts >= 1 and attempts <= math.ceil(elapsed) + 1,
            attempts .. " connects to the dropped database in " .. elapsed .. " s")
        assert.same({}, srv:unexpected_errors())
    end)
end)

describe("a server at its own max_connections", function()
    local RUN = server.capture("echo $PPID"):match("%d+")
    local DIR = "var/test-pg-budget-" .. RUN
    local srv, url, sleepers

    local function pg_sh(cmd)
        local out, ok = pg.sh(string.format("cd %s && bash scripts/pg.sh --dir %s %s",
            server.quote(server.ROOT), server.quote(DIR), cmd))
        assert(ok, "pg.sh " .. cmd .. " failed:\n" .. out)
        return out
    end

    setup(function()
        pg_sh("start")
        url = pg_sh("url")
        assert(psql(url, "ALTER SYSTEM SET max_connections = 6"))
        assert(psql(url, "ALTER SYSTEM SET superuser_reserved_connections = 0"))
        pg_sh("stop")
        pg_sh("start")
        srv = server.start {
            env = { DATABASE_URL = url },
            config = {
                workers = 1,
                db = { breaker_failures = 3, breaker_open_s = 2, acquire_timeout_ms = 3000 },
                tenants = { janitor_interval_s = 0 }, -- no connection of its own meanwhile
            },
        }
    end)

    teardown(function()
        if sleepers then os.execute("kill " .. sleepers .. " 2>/dev/null") end
        if srv then srv:stop(5) end
        server.cleanup()
        pcall(pg_sh, "destroy")
    end)

    it("answers 503 with Retry-After, never hangs, and serves again once there is room", function()
        srv:mark()
        assert.equal(200, http.request { port = srv.port, path = "/test/db/sleep?s=0" }.status)
        psql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'steeple'")
        assert.is_true(server.wait_until(function() return select(2, backends(url)) == 0 end, 10))
        -- take every connection the server has with psql sessions that sleep
        -- (a backend outlives its killed client: they end by themselves);
        -- one more each time, until a new session is refused. They sleep
        -- long enough that none ends before the last one is in, however
        -- slowly a loaded machine starts them
        local pids, out = {}, ""
        while #pids < 12 and not out:find("too many clients", 1, true) do
            pids[#pids + 1] = server.capture(string.format(
                "psql %s -XAtq -c 'SELECT pg_sleep(45)' >/dev/null 2>&1 & echo $!", server.quote(url))):match("%d+")
            sleepers = table.concat(pids, " ")
            server.wait_until(function()
                out = psql(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
                return out:find("too many clients", 1, true) or tonumber(out) == #pids
            end, 10)
        end
        assert.truthy(out:find("too many clients", 1, true), "psql sessions never filled the server: " .. out)
        for i = 1, 6 do
            local res = assert(http.request { port = srv.port, path = "/test/db/sleep?s=0", timeout = 20 })
            assert.equal(503, res.status, "request " .. i .. ": " .. res.body)
            assert.equal("service_unavailable", res.json.error.code)
            assert.truthy(tonumber(res.headers["retry-after"]), "a 503 without Retry-After")
        end
        assert.is_true(server.wait_until(function()
            return http.request { port = srv.port, path = "/test/db/sleep?s=0" }.status == 200
        end, 90), "the server never served again")
        sleepers = nil
        assert.same({}, srv:unexpected_errors())
        srv:assert_stops_cleanly()
        srv = nil
    end)
end)
