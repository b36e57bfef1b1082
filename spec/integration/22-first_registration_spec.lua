-- A fresh deployment as API.md prepares it: `migrate registry`, then `serve`,
-- with no `migrate tenants` and so no template database. Registrations build
-- the template themselves (or migrate their own database while another
-- builds it).
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local cjson = require "cjson"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local TEMPLATE <const> = "steeple_template"
local CHURCHES <const> = 10

local function database_exists(name)
    return psql(BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. name .. "'") == "1"
end

local function drop_templates()
    pg.psql_file(BASE_URL, "DROP DATABASE IF EXISTS " .. TEMPLATE .. " WITH (FORCE);\n"
        .. "DROP DATABASE IF EXISTS " .. TEMPLATE .. "_new WITH (FORCE);")
end

-- The tenant migrations, in order, as sql/tenant/init.lua lists them.
local function tenant_migrations()
    return table.concat(dofile(server.ROOT .. "/sql/tenant/init.lua"), ",")
end

local function applied(dbname)
    return (psql(url_of(dbname), "SELECT string_agg(name, ',' ORDER BY name) FROM schema_migrations"))
end

-- A registry as `migrate registry` alone leaves it: no template anywhere.
local function bare_registry(prefix)
    local name = prefix .. "_" .. auth.STAMP
    local reg = { name = name, url = url_of(name) }
    reg.env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false }
    psql(BASE_URL, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)")
    assert(select(2, psql(BASE_URL, "CREATE DATABASE " .. name)))
    assert.equal(0, (server.run_binary({ "migrate", "registry" }, reg.env, 60)))
    return reg
end

local function drop_registry(reg)
    local drops = {}
    for dbname in psql(reg.url, "SELECT db_name FROM tenants"):gmatch("tenant_%w+") do
        drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. dbname .. " WITH (FORCE);"
    end
    drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. reg.name .. " WITH (FORCE);"
    pg.psql_file(BASE_URL, table.concat(drops, "\n"))
end

-- Logs in as the church's owner and reads /api/me; returns the tenant id it names.
local function works(srv, body)
    local res = auth.post(srv, "/api/auth/login", { email = body.email, password = body.password })
    assert.equal(200, res.status, res.body)
    local me = auth.get(srv, "/api/me", res.json.accessToken)
    assert.equal(200, me.status, me.body)
    assert.equal(body.email, me.json.admin.email)
    return me.json.tenantId
end

describe("the first registrations of a fresh deployment", function()
    local reg, srv

    before_each(function()
        drop_templates()
        reg = bare_registry("firstreg")
    end)

    after_each(function()
        if srv then srv:stop(10) end
        srv = nil
        drop_registry(reg)
        drop_templates()
    end)

    teardown(function() server.cleanup() end)

    it("register 10 churches at once over 2 workers without migrate tenants, and each works", function()
        assert.is_false(database_exists(TEMPLATE))
        -- every registration of the burst may be in progress at once
        srv = server.start { config = { workers = 2, limits = { request_timeout_s = 60 },
            tenants = { max_provisioning = CHURCHES } }, env = reg.env }
        srv:mark()
        local bodies, specs = {}, {}
        for i = 1, CHURCHES do
            bodies[i] = auth.church("first" .. i, { phoneNumber = string.format("+1555444%04d", i) })
            specs[i] = { port = srv.port, method = "POST", path = "/api/auth/register", timeout = 120,
                headers = { ["Content-Type"] = "application/json" }, body = cjson.encode(bodies[i]) }
        end
        local ids = {}
        for i, res in ipairs(http.concurrent(specs, 180)) do
            assert.equal(201, res.status, i .. ": " .. tostring(res.body or res.error))
            assert.is_nil(ids[res.json.tenantId], "one tenant id twice")
            ids[res.json.tenantId] = i
        end
        for i = 1, CHURCHES do
            assert.equal(i, ids[works(srv, bodies[i])])
        end
        -- the template was built once, completely, under its own name
        assert.truthy(database_exists(TEMPLATE))
        assert.is_false(database_exists(TEMPLATE .. "_new"))
        assert.equal(tenant_migrations(), applied(TEMPLATE))
        for dbname in psql(reg.url, "SELECT db_name FROM tenants"):gmatch("tenant_%w+") do
            assert.equal(tenant_migrations(), applied(dbname))
        end
        assert.equal(CHURCHES, tonumber((psql(reg.url, "SELECT count(*) FROM tenants WHERE status = 'active'"))))
        assert.same({}, srv:unexpected_errors())
        -- a later registration copies the template; migrate tenants finds it current
        local later = auth.church("first-later")
        assert.equal(201, auth.post(srv, "/api/auth/register", later).status)
        works(srv, later)
        local status, err, out = server.run_binary({ "migrate", "tenants" }, reg.env, 120)
        assert.equal(0, status, err)
        assert.matches("tenants: 12 databases, 0 updated, 12 up to date, 0 failed", out)
        srv:assert_stops_cleanly()
        srv = nil
    end)

    it("drops the leftover of a template build cut short and builds it again", function()
        assert(select(2, psql(BASE_URL, "CREATE DATABASE " .. TEMPLATE .. "_new")))
        psql(url_of(TEMPLATE .. "_new"), "CREATE TABLE half_built (id int)")
        srv = server.start { config = { limits = { request_timeout_s = 60 } }, env = reg.env }
        srv:mark()
        local body = auth.church("first-leftover")
        local res = auth.post(srv, "/api/auth/register", body)
        assert.equal(201, res.status, res.body)
        works(srv, body)
        assert.is_false(database_exists(TEMPLATE .. "_new"))
        assert.equal(tenant_migrations(), applied(TEMPLATE))
        assert.equal("f", (psql(url_of(TEMPLATE), "SELECT to_regclass('half_built') IS NOT NULL")))
        assert.truthy(srv:log_contains("template built"))
        assert.same({}, srv:unexpected_errors())
        srv:assert_stops_cleanly()
        srv = nil
    end)
end)
