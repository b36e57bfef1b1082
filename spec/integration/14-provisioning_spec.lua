-- Registration that fails half-way, the janitor of registrations cut short,
-- and `steeple tenants`.
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql = pg.psql
local post, church = auth.post, auth.church

local reg, REG_URL, ENV
local function count(sql) return reg:count(sql) end

local function database_exists(name)
    return psql(BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. name .. "'") == "1"
end

local function tenant_databases()
    return #auth.tenant_databases(psql, BASE_URL)
end


-- A migrations directory like sql/ whose tenant list ends with a broken file.
local function broken_migrations()
    local dir = server.tmpdir() .. "/sql"
    assert(os.execute("cp -R " .. server.quote(server.ROOT .. "/sql") .. " " .. server.quote(dir)))
    server.write_file(dir .. "/tenant/9999_broken.sql", "SELECT no_such_column FROM no_such_table;\n")
    local list = assert(server.read_file(dir .. "/tenant/init.lua"))
    server.write_file(dir .. "/tenant/init.lua", (list:gsub("}%s*$", '    "9999_broken.sql",\n}\n')))
    return dir
end

describe("provisioning", function()
    local srv

    setup(function()
        reg = auth.registry("provspec")
        REG_URL, ENV = reg.url, reg.env
    end)

    teardown(function()
        if srv then srv:stop(10) end
        pg.psql(BASE_URL, "DROP DATABASE IF EXISTS tenant_janitor" .. auth.STAMP .. " WITH (FORCE)")
        reg:drop()
        server.cleanup()
    end)

    it("undoes a registration that fails after its database was made", function()
        srv = server.start {
            config = { limits = { request_timeout_s = 30 },
                       db = { template = "none", migrations_dir = broken_migrations() } },
            env = ENV,
        }
        local tenants, emails, dbs = count("SELECT count(*) FROM tenants"), count("SELECT count(*) FROM admin_emails"),
            tenant_databases()
        local body = church("broken")
        local res = post(srv, "/api/auth/register", body)
        assert.equal(500, res.status)
        assert.equal("internal_error", res.json.error.code)
        assert.is_nil(res.body:find("no_such", 1, true)) -- no internals in the answer
        assert.equal(tenants, count("SELECT count(*) FROM tenants"))
        assert.equal(emails, count("SELECT count(*) FROM admin_emails"))
        assert.equal(dbs, tenant_databases())
        assert.truthy(srv:log_contains("registration failed; undoing it"))
        local log_text = srv:log_text()
        assert.is_nil(log_text:find(body.email, 1, true), "the log holds the email")
        assert.is_nil(log_text:find(body.password, 1, true), "the log holds the password")
        assert.same({}, srv:unexpected_errors { "handler failed" })
        -- the same email is free again
        srv:stop(10)
        srv = server.start { config = { limits = { request_timeout_s = 30 } }, env = ENV }
        assert.equal(201, post(srv, "/api/auth/register", church("broken")).status)
        srv:assert_stops_cleanly()
        srv = nil
    end)

    it("the janitor removes registrations cut short, database included, and only those", function()
        local old_db = "tenant_janitor" .. auth.STAMP
        psql(BASE_URL, "DROP DATABASE IF EXISTS " .. old_db .. " WITH (FORCE)")
        assert(select(2, psql(BASE_URL, "CREATE DATABASE " .. old_db)))
        local old = psql(REG_URL, "INSERT INTO tenants (church_name, db_server, db_name, created_at) VALUES "
            .. "('cut short', 'main', '" .. old_db .. "', now() - interval '1 hour') RETURNING id")
        psql(REG_URL, "INSERT INTO admin_emails (email_hash, tenant_id, admin_id) VALUES "
            .. "(decode(repeat('ab', 32), 'hex'), '" .. old .. "', gen_random_uuid())")
        local fresh = psql(REG_URL, "INSERT INTO tenants (church_name, db_server, db_name) VALUES "
            .. "('in progress', 'main', 'tenant_fresh" .. auth.STAMP .. "') RETURNING id")
        srv = server.start {
            config = { tenants = { janitor_interval_s = 1, provisioning_timeout_s = 60 } }, env = ENV,
        }
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM tenants WHERE id = '" .. old .. "'") == 0
        end, 15), "the janitor never removed the old registration")
        assert.is_false(database_exists(old_db))
        assert.equal(0, count("SELECT count(*) FROM admin_emails WHERE tenant_id = '" .. old .. "'"))
        assert.equal(1, count("SELECT count(*) FROM tenants WHERE id = '" .. fresh .. "'"))
        assert.truthy(srv:log_contains("janitor undid a registration cut short"))
        psql(REG_URL, "DELETE FROM tenants WHERE id = '" .. fresh .. "'")
        srv:assert_stops_cleanly()
        srv = nil
    end)

    describe("steeple tenants", function()
        local id, dbname

        setup(function()
            srv = server.start { config = { limits = { request_timeout_s = 30 } }, env = ENV }
            local res = post(srv, "/api/auth/register", church("cli", { phoneNumber = "+15559990001" }))
            assert.equal(201, res.status, res.body)
            id = res.json.tenantId
            dbname = (psql(REG_URL, "SELECT db_name FROM tenants WHERE id = '" .. id .. "'"))
        end)

        it("lists the churches", function()
            local status, _, out = server.run_binary({ "tenants", "list" }, ENV, 30)
            assert.equal(0, status)
            local line = out:match("[^\n]*" .. id .. "[^\n]*")
            assert.truthy(line, out)
            assert.truthy(line:find("active", 1, true))
            assert.truthy(line:find("+15559990001", 1, true))
            assert.truthy(line:find("main/" .. dbname, 1, true))
            assert.truthy(out:find("%d+ tenants\n$"))
        end)

        it("suspends and activates, and says so when there is nothing to do", function()
            local status, _, out = server.run_binary({ "tenants", "suspend", id }, ENV, 30)
            assert.equal(0, status)
            assert.equal(id .. ": suspended\n", out)
            assert.equal("suspended", psql(REG_URL, "SELECT status FROM tenants WHERE id = '" .. id .. "'"))
            status, _, out = server.run_binary({ "tenants", "suspend", id }, ENV, 30)
            assert.equal(0, status)
            assert.equal(id .. ": already suspended\n", out)
            assert.equal(0, (server.run_binary({ "tenants", "activate", id }, ENV, 30)))
            assert.equal("active", psql(REG_URL, "SELECT status FROM tenants WHERE id = '" .. id .. "'"))
        end)

        it("refuses unknown and malformed ids and bad usage", function()
            local status, err = server.run_binary({ "tenants", "suspend", "00000000-0000-4000-8000-000000000000" }, ENV, 30)
            assert.equal(1, status)
            assert.truthy(err:find("no tenant", 1, true))
            status, err = server.run_binary({ "tenants", "activate", "'; DROP TABLE tenants; --" }, ENV, 30)
            assert.equal(1, status)
            assert.truthy(err:find("is not a tenant id", 1, true))
            assert.equal(2, (server.run_binary({ "tenants" }, ENV, 30)))
            assert.equal(2, (server.run_binary({ "tenants", "rename", id }, ENV, 30)))
        end)

        it("drops a church only with --yes", function()
            local status, err = server.run_binary({ "tenants", "drop", id }, ENV, 30)
            assert.equal(2, status)
            assert.truthy(err:find("--yes", 1, true))
            assert.truthy(database_exists(dbname))
            assert.equal(0, (server.run_binary({ "tenants", "drop", id, "--yes" }, ENV, 30)))
            assert.is_false(database_exists(dbname))
            assert.equal(0, count("SELECT count(*) FROM tenants WHERE id = '" .. id .. "'"))
            assert.equal(0, count("SELECT count(*) FROM admin_emails WHERE tenant_id = '" .. id .. "'"))
            -- the email is free again
            assert.equal(201, post(srv, "/api/auth/register", church("cli")).status)
        end)

        it("stops cleanly", function() srv:assert_stops_cleanly() end)
    end)
end)
