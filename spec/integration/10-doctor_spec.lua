-- steeple doctor: one line per check, the fix for each failure, status 1 on any.
local server = require "support.server"
local pg = require "support.pg"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local function doctor(url, config_text, extra_env)
    local cfg = server.tmpdir() .. "/config.lua"
    server.write_file(cfg, config_text or "return {}")
    local env = { DATABASE_URL = url, STEEPLE_TENANT_DATABASE_URLS = false }
    for k, v in pairs(extra_env or {}) do env[k] = v end
    return server.run_binary({ "doctor", "--config", cfg }, env, 60)
end

describe("doctor", function()
    local dbname = "doctortest_" .. os.time() % 100000

    setup(function()
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. dbname .. " WITH (FORCE)")
        psql(BASE_URL, "CREATE DATABASE " .. dbname)
        psql(BASE_URL, "DROP ROLE IF EXISTS doctor_nocreate")
        psql(BASE_URL, "CREATE ROLE doctor_nocreate LOGIN NOCREATEDB")
    end)

    teardown(function()
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. dbname .. " WITH (FORCE)")
        psql(BASE_URL, "DROP ROLE IF EXISTS doctor_nocreate")
        server.cleanup()
    end)

    it("passes every check on a migrated database and exits 0", function()
        local url = url_of(dbname)
        local cfg = server.tmpdir() .. "/config.lua"
        server.write_file(cfg, "return {}")
        local env = { DATABASE_URL = url, STEEPLE_TENANT_DATABASE_URLS = false }
        assert.equal(0, (server.run_binary({ "migrate", "registry", "--config", cfg }, env, 60)))
        assert.equal(0, (server.run_binary({ "migrate", "tenants", "--config", cfg }, env, 60)))
        local status, err, out = doctor(url)
        assert.equal(0, status, out .. err)
        assert.matches("ok    main: connects, PostgreSQL 13 or later: PostgreSQL 15", out)
        assert.matches("ok    main: the role can CREATE DATABASE", out)
        assert.matches("ok    registry: migrations applied and unchanged", out)
        assert.matches("ok    main: template steeple_template present and current", out)
        assert.matches("ok    auth keys: STEEPLE_JWT_SECRET and STEEPLE_DATA_KEY are set and valid", out)
        assert.matches("all checks passed", out)
        -- production without keys: the one failing check names them
        status, err, out = doctor(url, "return { env = 'production' }",
            { STEEPLE_JWT_SECRET = false, STEEPLE_DATA_KEY = false })
        assert.equal(1, status, out .. err)
        assert.matches("FAIL  auth keys: STEEPLE_JWT_SECRET and STEEPLE_DATA_KEY are set and valid", out)
        assert.matches("1 checks failed", out)
        psql(BASE_URL, "DROP DATABASE IF EXISTS steeple_template WITH (FORCE)")
    end)

    it("fails on an unmigrated registry, naming the fix", function()
        local fresh = dbname .. "_raw"
        psql(BASE_URL, "CREATE DATABASE " .. fresh)
        local status, _, out = doctor(url_of(fresh), "return { db = { template = 'none' } }")
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. fresh .. " WITH (FORCE)")
        assert.equal(1, status)
        local files = #dofile(server.ROOT .. "/sql/registry/init.lua")
        assert.matches("FAIL  registry: migrations applied and unchanged: " .. files .. " migrations not applied", out)
        assert.matches("fix: run: steeple migrate registry", out)
    end)

    it("fails when the role cannot create databases", function()
        local status, _, out = doctor(url_of(dbname, "doctor_nocreate"), "return { db = { template = 'none' } }")
        assert.equal(1, status)
        assert.matches("FAIL  main: the role can CREATE DATABASE: permission denied", out)
        assert.matches("fix: ALTER ROLE", out)
    end)

    it("fails when the configured caps exceed max_connections", function()
        local status, _, out = doctor(url_of(dbname), "return { db = { server_max_connections = 5000, template = 'none' } }")
        assert.equal(1, status)
        assert.matches("FAIL  main: max_connections covers db.server_max_connections: db.server_max_connections is 5000", out)
    end)

    describe("with cluster.nodes", function()
        local room, max, reserved

        setup(function()
            max = tonumber((psql(BASE_URL, "SHOW max_connections")))
            reserved = tonumber((psql(BASE_URL, "SHOW superuser_reserved_connections")))
            room = max - reserved
        end)

        it("warns, with the numbers and what to set, when the nodes' budgets exceed max_connections", function()
            local each = 80
            local nodes = room // each + 1 -- one node more than fits
            local status, err, out = doctor(url_of(dbname), string.format(
                "return { cluster = { nodes = %d }, db = { server_max_connections = %d, template = 'none' } }",
                nodes, each))
            assert.equal(0, status, out .. err) -- a warning, not a failure
            local line = string.format("WARN  main: cluster.nodes x db.server_max_connections fits max_connections: "
                .. "%d nodes x db.server_max_connections %d = %d connections, but the server allows %d "
                .. "(max_connections %d - %d reserved): set db.server_max_connections to at most %d, "
                .. "or max_connections to at least %d", nodes, each, nodes * each, room, max, reserved,
                room // nodes, nodes * each + reserved)
            assert.truthy(out:find(line, 1, true), out)
            assert.matches("fix: lower db.server_max_connections on every node", out)
            assert.matches("ok    main: max_connections covers db.server_max_connections", out)
            assert.matches("all checks passed, 1 warnings", out)
        end)

        it("says ok when the nodes' budgets fit", function()
            local each = room // 3
            local status, err, out = doctor(url_of(dbname), string.format(
                "return { cluster = { nodes = 3 }, db = { server_max_connections = %d, template = 'none' } }", each))
            assert.equal(0, status, out .. err)
            local line = string.format("ok    main: cluster.nodes x db.server_max_connections fits max_connections: "
                .. "3 nodes x %d = %d of %d", each, 3 * each, room)
            assert.truthy(out:find(line, 1, true), out)
            assert.is_nil(out:find("WARN", 1, true), out)
            assert.matches("all checks passed\n", out)
        end)

        it("says nothing of it for one node", function()
            local status, err, out = doctor(url_of(dbname), "return { db = { template = 'none' } }")
            assert.equal(0, status, out .. err)
            assert.is_nil(out:find("cluster.nodes", 1, true), out)
        end)
    end)

    it("fails when the server cannot be reached, and says how to fix it", function()
        local status, _, out = doctor("postgresql://steeple@/steeple?host=/nonexistent-dir&port=5432")
        assert.equal(1, status)
        assert.matches("FAIL  main: connects, PostgreSQL 13 or later", out)
        assert.matches("fix: check the URL", out)
    end)

    it("fails without DATABASE_URL", function()
        local status, _, out = doctor(false)
        assert.equal(1, status)
        assert.matches("FAIL  DATABASE_URL is set", out)
    end)
end)
