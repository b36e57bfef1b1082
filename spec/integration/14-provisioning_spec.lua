-- Registration that fails half-way, the janitor of registrations cut short,
-- and `steeple tenants`.
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local cjson = require "cjson"
local secrets = require "support.secrets"

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
            config = { limits = { request_timeout_s = 30 }, tenants = { max_provisioning = 1 },
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
        -- the failure gave its registration slot back: the next one fails the same way, not 503
        assert.equal(500, post(srv, "/api/auth/register", church("broken2")).status)
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

    describe("registrations in progress", function()
        local CONFIG = { workers = 1, limits = { request_timeout_s = 60 }, tenants = { max_provisioning = 1 },
                         db = { acquire_timeout_ms = 30000 } }

        -- A registration body as raw request spec, for http.concurrent.
        local function spec_of(body)
            return { port = srv.port, method = "POST", path = "/api/auth/register", timeout = 60,
                     headers = { ["Content-Type"] = "application/json" }, body = cjson.encode(body) }
        end

        -- True when the registered owner can sign in and read the church.
        local function works(body, res)
            local signed_in = post(srv, "/api/auth/login", { email = body.email, password = body.password })
            if signed_in.status ~= 200 or signed_in.json.tenantId ~= res.json.tenantId then return false end
            local me = auth.get(srv, "/api/me", res.json.accessToken)
            return me.status == 200 and me.json.church.name == body.churchName
                and count("SELECT count(*) FROM tenants WHERE status = 'active' AND id = '"
                    .. res.json.tenantId .. "'") == 1
        end

        after_each(function()
            if srv then srv:assert_stops_cleanly() end
            srv = nil
        end)

        it("past tenants.max_provisioning answer 503 with Retry-After; every 201 is a working church", function()
            srv = server.start { config = CONFIG, env = ENV }
            local created, refused, round = 0, 0, 0
            -- a burst of registrations from one worker: one runs, the others are refused at once
            repeat
                round = round + 1
                local bodies, specs = {}, {}
                for i = 1, 6 do
                    bodies[i] = church("burst" .. round .. "x" .. i)
                    specs[i] = spec_of(bodies[i])
                end
                for i, res in ipairs(http.concurrent(specs, 120)) do
                    assert.truthy(res.status == 201 or res.status == 503, res.status or res.error)
                    if res.status == 503 then
                        refused = refused + 1
                        assert.equal("service_unavailable", res.json.error.code)
                        assert.equal("1", res.headers["retry-after"])
                        -- nothing of a refused one was made
                        assert.equal(401, post(srv, "/api/auth/login",
                            { email = bodies[i].email, password = bodies[i].password }).status)
                    else
                        created = created + 1
                        secrets.add(res.json.accessToken, res.json.refreshToken)
                        assert.is_true(works(bodies[i], res), bodies[i].email)
                    end
                end
            until refused > 0 or round == 3
            assert.truthy(refused > 0, "no registration was refused")
            assert.truthy(created > 0, "no registration succeeded")
            assert.equal(0, count("SELECT count(*) FROM tenants WHERE status = 'provisioning'"))
            -- the slots came back: after a refusal (409) too
            local body = church("after")
            local res = post(srv, "/api/auth/register", body)
            assert.equal(201, res.status, res.body)
            assert.is_true(works(body, res))
            assert.equal(409, post(srv, "/api/auth/register", body).status)
            assert.equal(201, post(srv, "/api/auth/register", church("after2")).status)
            assert.truthy(srv:log_contains("registration refused: too many in progress"))
        end)

        -- Holds the registry's tenants table for `seconds` from a psql in the
        -- background, so that a registration waits for it; returns a function
        -- that tells whether the lock is still held.
        local function lock_tenants(seconds)
            local function held()
                return count("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    .. "WHERE c.relname = 'tenants' AND l.mode = 'AccessExclusiveLock' AND l.granted") > 0
            end
            local script = server.tmpdir() .. "/lock.sql"
            server.write_file(script, "BEGIN;\nLOCK TABLE tenants IN ACCESS EXCLUSIVE MODE;\n"
                .. "SELECT pg_sleep(" .. seconds .. ");\nCOMMIT;\n")
            assert(os.execute("psql " .. server.quote(REG_URL) .. " -XAtq -f " .. server.quote(script)
                .. " >/dev/null 2>&1 &"))
            assert.truthy(server.wait_until(held, 10), "the lock was never taken")
            return held
        end

        local function waiting_for_lock()
            return count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                .. "AND datname = '" .. reg.name .. "'") > 0
        end

        it("gives the slot back when a registration is cut short by the request deadline", function()
            srv = server.start {
                config = { workers = 1, limits = { request_timeout_s = server.slow(3) },
                           tenants = { max_provisioning = 1 } },
                env = ENV,
            }
            local held = lock_tenants(server.slow(6))
            local cut = post(srv, "/api/auth/register", church("cut"))
            assert.equal(503, cut.status, cut.body)
            assert.equal("service_unavailable", cut.json.error.code)
            assert.truthy(srv:log_contains("the handler was still waiting at the request deadline"))
            assert.same({}, srv:unexpected_errors { "request deadline exceeded" })
            assert.truthy(server.wait_until(function() return not held() end, 15))
            local body = church("uncut")
            local res = post(srv, "/api/auth/register", body)
            assert.equal(201, res.status, res.body)
            assert.is_true(works(body, res))
        end)

        it("gives the slot back when the client leaves mid-registration", function()
            srv = server.start { config = CONFIG, env = ENV }
            local held = lock_tenants(4)
            local sock = assert(http.raw(srv.port))
            local body = cjson.encode(church("leaver"))
            assert(sock:send("POST /api/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                .. "Content-Length: " .. #body .. "\r\n\r\n" .. body))
            assert.truthy(server.wait_until(waiting_for_lock, 10), "the registration never waited for the lock")
            sock:close()
            assert.truthy(server.wait_until(function() return not held() end, 15))
            -- evhttp (libevent 2.1) does not read a connection whose request
            -- runs, so it sees no close: the registration runs to its end
            -- (were the close seen, the core would close the coroutine, which
            -- closes the slot as at the deadline above)
            assert.truthy(srv:wait_log('"route":"/api/auth/register","status":%d+', 15))
            local after = church("stayer")
            local res = post(srv, "/api/auth/register", after)
            assert.equal(201, res.status, res.body)
            assert.is_true(works(after, res))
        end)
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
