-- CREATE/DROP DATABASE from Lua with checked names, placement over tenant
-- servers, and two `migrate tenants` at once.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"

local pg = require "support.pg"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local TENANT_MIGRATIONS = dofile(server.ROOT .. "/sql/tenant/init.lua")
local sh, psql = pg.sh, pg.psql
local function url_of(dbname, base) return pg.url_of(dbname, nil, base) end

local function post(srv, path, body)
    return http.request { port = srv.port, method = "POST", path = path, body = require("cjson").encode(body),
        headers = { ["Content-Type"] = "application/json" } }
end

local function database_count()
    return tonumber((psql(BASE_URL, "SELECT count(*) FROM pg_database")))
end

describe("create and drop database", function()
    local srv
    local stamp = tostring(os.time() % 100000)
    local registry = "admintest_" .. stamp

    srv = suite.server(function()
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE)")
        psql(BASE_URL, "CREATE DATABASE " .. registry)
        local env = { DATABASE_URL = url_of(registry), STEEPLE_TENANT_DATABASE_URLS = false }
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 60)))
        assert.equal(0, (server.run_binary({ "migrate", "tenants" }, env, 60))) -- makes the template
        -- one connection per pool: the maintenance pool is full of idle
        -- connections when CREATE DATABASE waits for one
        return { config = { workers = 1, db = { pool_max = 1 } }, env = env }
    end, {
        after = function()
            psql(BASE_URL, "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE)")
            psql(BASE_URL, "DROP DATABASE IF EXISTS tenant_adm" .. stamp .. " WITH (FORCE)")
            psql(BASE_URL, "DROP DATABASE IF EXISTS steeple_template WITH (FORCE)")
        end,
    })

    it("creates a tenant database from the migrated template and drops it", function()
        local name = "tenant_adm" .. stamp
        assert.equal(200, http.request({ port = srv.port, path = "/ready" }).status) -- leaves an idle connection
        local res = post(srv, "/test/admin/create", { name = name, template = "steeple_template" })
        assert.equal(200, res.status, res.body)
        assert.equal("1", (psql(BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. name .. "'")))
        assert.equal(table.concat(TENANT_MIGRATIONS, ","),
            (psql(url_of(name), "SELECT string_agg(name, ',' ORDER BY name) FROM schema_migrations")))
        res = post(srv, "/test/admin/drop", { name = name })
        assert.equal(200, res.status, res.body)
        assert.equal("0", (psql(BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. name .. "'")))
        assert.same({}, srv:unexpected_errors())
    end)

    local bad = {
        { "upper case", "tenant_ABC" }, { "a space", "tenant_a b" }, { "a quote", 'tenant_x"; DROP DATABASE steeple; --' },
        { "no prefix", "grace" }, { "an existing system database", "postgres" }, { "an empty suffix", "tenant_" },
        { "2,000 characters", "tenant_" .. string.rep("a", 1993) }, { "a hyphen", "tenant_a-b" },
    }
    for _, case in ipairs(bad) do
        it("refuses a name with " .. case[1] .. " before any SQL", function()
            local before = database_count()
            local res = post(srv, "/test/admin/create", { name = case[2] })
            assert.equal(500, res.status)
            assert.equal("internal_error", res.json.error.code)
            res = post(srv, "/test/admin/drop", { name = case[2] })
            assert.equal(500, res.status)
            assert.equal(before, database_count())
            assert.same({}, srv:unexpected_errors { "not a database name steeple creates" })
        end)
    end

    it("refuses a template that steeple did not make", function()
        local res = post(srv, "/test/admin/create", { name = "tenant_t" .. stamp, template = "template1" })
        assert.equal(500, res.status)
        assert.same({}, srv:unexpected_errors { "not a template steeple made" })
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("placement over two tenant servers", function()
    local srv, second, registry
    local dir = "var/test-pg-place-" .. sh("echo $PPID")

    srv = suite.server(function()
        local out, ok = sh("cd " .. server.quote(server.ROOT) .. " && bash scripts/pg.sh --dir " .. dir
            .. " --port 5433 start && bash scripts/pg.sh --dir " .. dir .. " --port 5433 url")
        assert(ok, out)
        second = out:match("[^\n]+$")
        registry = "placetest_" .. os.time() % 100000
        psql(BASE_URL, "CREATE DATABASE " .. registry)
        local env = { DATABASE_URL = url_of(registry), STEEPLE_TENANT_DATABASE_URLS = false }
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 60)))
        return {
            config = { workers = 1 },
            env = { DATABASE_URL = url_of(registry),
                    STEEPLE_TENANT_DATABASE_URLS = url_of("steeple") .. "," .. url_of("postgres", second) },
        }
    end, {
        mark = false,
        after = function()
            psql(BASE_URL, "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE)")
            sh("cd " .. server.quote(server.ROOT) .. " && bash scripts/pg.sh --dir " .. dir .. " --port 5433 destroy")
        end,
    })

    it("puts a new tenant on the server with the fewest tenants", function()
        -- servers are named host:port, from a socket URL (?host=/dir&port=N) or a TCP one
        local function key_of(u)
            local host = u:match("host=([^&]+)")
            if host then return host .. ":" .. (u:match("port=(%d+)") or "5432") end
            local h, p = u:match("@([^:/]+):(%d+)/")
            return h .. ":" .. p
        end
        local main_key, second_key = key_of(BASE_URL), key_of(second)
        local res = http.request { port = srv.port, path = "/test/place" }
        assert.equal(200, res.status, res.body)
        assert.equal("main", res.json.server) -- main is listed too, and first
        psql(url_of(registry), "INSERT INTO tenants (church_name, status, db_server, db_name) VALUES "
            .. "('a', 'active', 'main', 'tenant_pa1'), ('b', 'active', 'main', 'tenant_pa2'), "
            .. "('c', 'active', '" .. second_key .. "', 'tenant_pa3')")
        res = http.request { port = srv.port, path = "/test/place" }
        assert.equal(second_key, res.json.server)
        assert.truthy(main_key)
    end)
end)

describe("two migrate tenants at once", function()
    it("both succeed and every database is migrated once", function()
        local registry = "twomig_" .. os.time() % 100000
        psql(BASE_URL, "CREATE DATABASE " .. registry)
        local env = { DATABASE_URL = url_of(registry), STEEPLE_TENANT_DATABASE_URLS = false }
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 60)))
        psql(BASE_URL, "DROP DATABASE IF EXISTS steeple_template WITH (FORCE)")
        local names = {}
        for i = 1, 6 do
            names[i] = "tenant_two" .. os.time() % 100000 .. i
            psql(BASE_URL, "DROP DATABASE IF EXISTS " .. names[i])
            psql(BASE_URL, "CREATE DATABASE " .. names[i])
            psql(url_of(registry), "INSERT INTO tenants (church_name, status, db_server, db_name) VALUES ('x', 'active', 'main', '"
                .. names[i] .. "')")
        end
        local base = server.tmpdir()
        local cmd = server.command({ "migrate", "tenants", "--concurrency", "3" }, env)
        os.execute(string.format("cd %s && (%s > %s/1 2>&1; echo $? > %s/rc1) & (%s > %s/2 2>&1; echo $? > %s/rc2) & wait",
            server.quote(server.ROOT), cmd, base, base, cmd, base, base))
        local rc1, rc2 = server.read_file(base .. "/rc1"), server.read_file(base .. "/rc2")
        local outs = server.read_file(base .. "/1") .. server.read_file(base .. "/2")
        assert.equal("0", rc1:gsub("%s", ""), outs)
        assert.equal("0", rc2:gsub("%s", ""), outs)
        for _, name in ipairs(names) do
            assert.equal(tostring(#TENANT_MIGRATIONS), (psql(url_of(name), "SELECT count(*) FROM schema_migrations")))
        end
        assert.equal(tostring(#TENANT_MIGRATIONS),
            (psql(url_of("steeple_template"), "SELECT count(*) FROM schema_migrations")))
        for _, name in ipairs(names) do psql(BASE_URL, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)") end
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. registry .. " WITH (FORCE)")
        psql(BASE_URL, "DROP DATABASE IF EXISTS steeple_template WITH (FORCE)")
        server.cleanup()
    end)
end)
