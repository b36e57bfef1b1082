-- Tenant databases behind a bounded LRU of pools: 300 databases, capacity
-- 100, concurrent requests over all of them; connections never exceed the caps.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"

local pg = require "support.pg"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, psql_file, url_of = pg.psql, pg.psql_file, pg.url_of
local N <const> = 300
local SERVER_CAP <const> = 24 -- over both workers

describe("tenant pools", function()
    local registry, ids, names = "tenantspec_" .. os.time() % 100000, {}, {}
    local suspended

    local srv = suite.server(function()
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE)")
        assert(select(2, psql(BASE_URL, "CREATE DATABASE " .. registry)))
        local env = { DATABASE_URL = url_of(registry), STEEPLE_TENANT_DATABASE_URLS = false }
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 60)))
        assert.equal(0, (server.run_binary({ "migrate", "tenants" }, env, 60)))
        local creates, inserts = {}, {}
        for i = 1, N do
            names[i] = string.format("tenant_ts%d%03d", os.time() % 100000, i)
            creates[#creates + 1] = string.format("DROP DATABASE IF EXISTS %s;\nCREATE DATABASE %s TEMPLATE steeple_template;",
                names[i], names[i])
            inserts[#inserts + 1] = string.format("('church %d', 'active', 'main', '%s')", i, names[i])
        end
        local out, ok = psql_file(BASE_URL, table.concat(creates, "\n"))
        assert(ok, out)
        local rows = psql(url_of(registry), "INSERT INTO tenants (church_name, status, db_server, db_name) VALUES "
            .. table.concat(inserts, ", ") .. " RETURNING id")
        for id in rows:gmatch("[%x-]+") do ids[#ids + 1] = id end
        assert.equal(N, #ids)
        suspended = ids[N]
        psql(url_of(registry), "UPDATE tenants SET status = 'suspended' WHERE id = '" .. suspended .. "'")
        return {
            config = {
                workers = 2,
                limits = { request_timeout_s = 30 },
                db = { url = url_of(registry), pool_max = 2, server_max_connections = SERVER_CAP,
                       acquire_timeout_ms = 5000 },
                tenants = { capacity = 100 },
            },
            env = { DATABASE_URL = url_of(registry), STEEPLE_TENANT_DATABASE_URLS = false },
        }
    end, {
        stop_s = 10,
        after = function()
            local drops = {}
            for _, name in ipairs(names) do drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE);" end
            drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE);"
            drops[#drops + 1] = "DROP DATABASE IF EXISTS steeple_template WITH (FORCE);"
            psql_file(BASE_URL, table.concat(drops, "\n"))
        end,
    })

    it("serves concurrent requests over 300 databases within the connection caps", function()
        local specs = {}
        for round = 1, 3 do
            for i = 1, N - 1 do
                local k = (i * 7 + round * 13) % (N - 1) + 1 -- a spread-out order
                specs[#specs + 1] = { port = srv.port, path = "/test/tenant/" .. ids[k], want = names[k] }
            end
        end
        local peak, running, next_spec, results = 0, 32, 1, {}
        local funcs = {}
        for w = 1, 32 do
            funcs[w] = function()
                while next_spec <= #specs do
                    local i = next_spec
                    next_spec = next_spec + 1
                    local res, err = http.request(specs[i])
                    results[i] = res or { error = err }
                end
                running = running - 1
            end
        end
        funcs[#funcs + 1] = function()
            while running > 0 do
                local n = tonumber((psql(BASE_URL,
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'steeple'"))) or 0
                if n > peak then peak = n end
                http.sleep(0.05)
            end
        end
        for _, r in ipairs(http.run(funcs, 300)) do assert.is_true(r.ok, r.err) end
        results = { ok = true, value = results }
        local ok, unavailable = 0, 0
        for i, res in ipairs(results.value) do
            if res.status == 200 then
                assert.equal(specs[i].want, res.json.db)
                ok = ok + 1
            else
                assert.equal(503, res.status, res.body or res.error)
                assert.equal("service_unavailable", res.json.error.code)
                unavailable = unavailable + 1
            end
        end
        assert.is_true(ok > #specs * 0.9, ok .. " of " .. #specs .. " succeeded")
        assert.is_true(peak <= SERVER_CAP, "peak of " .. peak .. " connections over the cap of " .. SERVER_CAP)
        assert.is_true(peak > 2, "the load never used more than " .. peak .. " connections")
        assert.is_true(srv:metric("steeple_tenant_pool_evictions_total") > 0)
        assert.is_true(srv:metric("steeple_tenant_pools") <= 2 * 100)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a suspended tenant with 503 tenant_unavailable", function()
        local res = http.request { port = srv.port, path = "/test/tenant/" .. suspended }
        assert.equal(503, res.status)
        assert.equal("tenant_unavailable", res.json.error.code)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers an unknown or malformed tenant id with 404", function()
        for _, id in ipairs { "00000000-0000-0000-0000-000000000000", "not-a-uuid", "1;DROP", string.rep("a", 2000) } do
            local res = http.request { port = srv.port, path = "/test/tenant/" .. id }
            assert.equal(404, res.status, id)
            assert.equal("not_found", res.json.error.code)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
