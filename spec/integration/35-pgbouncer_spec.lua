-- steeple through a real PgBouncer 1.18 in transaction mode: the registry and
-- the churches' databases are reached through it (db.prepared_statements =
-- false), migrations go to the server directly. Registration, login, reads,
-- webhooks, the spool's replay when PgBouncer comes back, outbound sends,
-- doctor; and what named prepared statements do there.
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local pgbouncer = require "support.pgbouncer"

local psql, url_of = pg.psql, pg.url_of
local HOOK <const> = "/api/webhooks/telnyx/messaging"
local CHURCH <const> = "+15553500001"

describe("through PgBouncer in transaction mode", function()
    local reg, bouncer, srv, tx, fake_pid, fake_port, fake_log, token, tenant_db, conversation

    local function stored(prefix)
        return tonumber((psql(url_of(tenant_db), "SELECT count(*) FROM messages WHERE provider_message_id LIKE '"
            .. prefix .. "%'")))
    end

    local function env()
        return { DATABASE_URL = bouncer:url(reg.name), STEEPLE_TENANT_DATABASE_URLS = false,
                 TELNYX_PUBLIC_KEY = tx.public_key, TELNYX_API_KEY = "test-api-key",
                 STEEPLE_SPOOL_DIR = server.tmpdir() .. "/spool" }
    end

    local function start(prepared)
        return server.start {
            config = { workers = 2, limits = { request_timeout_s = 30 },
                       spool = { replay_interval_s = 0.2, after_ms = server.slow(1000) },
                       db = { prepared_statements = prepared or false, breaker_open_s = 0.5,
                              connect_timeout_ms = server.slow(1000), acquire_timeout_ms = server.slow(2000) },
                       telnyx = { api_base = "http://127.0.0.1:" .. fake_port, send_attempts = 3, timeout_ms = 1000,
                                  sweep_interval_s = 1 } },
            env = env(),
        }
    end

    -- Advisory locks still held on the cluster (by any session): none may
    -- outlive a request.
    local function advisory_locks()
        return psql(pg.BASE_URL, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    end

    setup(function()
        reg = auth.registry("pgbspec") -- migrated directly, template included
        bouncer = pgbouncer.start { target = pg.BASE_URL }
        tx = telnyx.new()
        fake_port = server.free_port()
        fake_log = server.tmpdir() .. "/fake.log"
        fake_pid = telnyx.start_fake(fake_port, fake_log)
        srv = start()
    end)

    teardown(function()
        if srv then srv:stop(10) end
        if fake_pid then os.execute("kill " .. fake_pid) end
        if bouncer then bouncer:stop() end
        reg:drop()
        server.cleanup()
    end)

    before_each(function() srv:mark() end)

    it("registers a church: its database is made on the server behind PgBouncer", function()
        local res = auth.post(srv, "/api/auth/register", auth.church("pgb", { phoneNumber = CHURCH }))
        assert.equal(201, res.status, res.body)
        token = res.json.accessToken
        tenant_db = psql(reg.url, "SELECT db_name || ' ' || db_server || ' ' || status FROM tenants")
        assert.matches("^tenant_%x+ main active$", tenant_db)
        tenant_db = tenant_db:match("^(%S+)")
        assert.equal("1", psql(pg.BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. tenant_db .. "'"))
        -- the copy of the template is complete and its owner can log in
        assert.equal("1", psql(url_of(tenant_db), "SELECT count(*) FROM admins"))
        assert.equal("0", advisory_locks())
        assert.same({}, srv:unexpected_errors())
    end)

    it("logs in and reads", function()
        local body = auth.church("pgb")
        local login = auth.post(srv, "/api/auth/login", { email = body.email, password = body.password })
        assert.equal(200, login.status, login.body)
        token = login.json.accessToken
        local me = auth.get(srv, "/api/me", token)
        assert.equal(200, me.status, me.body)
        assert.equal(CHURCH, me.json.church.phoneNumber)
        local list = auth.get(srv, "/api/conversations", token)
        assert.equal(200, list.status, list.body)
        assert.same({}, list.json.conversations)
        -- many reads at once over both workers: PgBouncer hands each
        -- transaction any server connection
        for _ = 1, 30 do
            assert.equal(200, auth.get(srv, "/api/me", token).status)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("stores signed webhooks", function()
        for i = 1, 10 do
            local res = tx:post(srv, HOOK, telnyx.received("pgb-in-" .. i, "+1555351" .. string.format("%04d", i),
                CHURCH, "hello " .. i))
            assert.truthy(telnyx.accepted(res), res.body)
        end
        assert.truthy(server.wait_until(function() return stored("pgb-in-") == 10 end, 15),
            "stored: " .. tostring(stored("pgb-in-")))
        -- the same event again is a duplicate
        local again = tx:post(srv, HOOK, telnyx.received("pgb-in-1", "+15553510001", CHURCH, "hello 1"))
        assert.truthy(telnyx.accepted(again, "duplicate"), again.body)
        assert.equal(10, stored("pgb-in-"))
        local list = auth.get(srv, "/api/conversations", token)
        assert.equal(10, #list.json.conversations)
        conversation = list.json.conversations[1].id
        assert.same({}, srv:unexpected_errors())
    end)

    it("sends outbound messages through the provider", function()
        local ids = {}
        for i = 1, 5 do
            local res = auth.post(srv, "/api/conversations/" .. conversation .. "/messages",
                { text = "pgb out " .. i }, { Authorization = "Bearer " .. token })
            assert.equal(202, res.status, res.body)
            ids[#ids + 1] = "'" .. res.json.message.id .. "'"
        end
        local sql = "SELECT count(*) FROM messages WHERE status = 'sent' AND provider_message_id LIKE 'fake-%' "
            .. "AND id IN (" .. table.concat(ids, ",") .. ")"
        assert.truthy(server.wait_until(function() return psql(url_of(tenant_db), sql) == "5" end, 15),
            psql(url_of(tenant_db), "SELECT status, send_attempts FROM messages WHERE direction = 'outbound'"))
        local sent = 0
        for line in (server.read_file(fake_log) or ""):gmatch("[^\n]+") do
            if line:find('"pgb out ', 1, true) then sent = sent + 1 end
        end
        assert.equal(5, sent)
        assert.equal("0", advisory_locks())
        assert.same({}, srv:unexpected_errors())
    end)

    it("spools webhooks while PgBouncer is down and replays them when it is back", function()
        bouncer:stop()
        for i = 1, 8 do
            local res = tx:post(srv, HOOK, telnyx.received("pgb-down-" .. i, "+1555352" .. string.format("%04d", i),
                CHURCH))
            assert.equal(202, res.status, res.body)
            assert.same({ status = "spooled" }, res.json)
        end
        assert.truthy(server.wait_until(function()
            return (tonumber(srv:metric("steeple_spool_pending")) or 0) >= 8
        end, 5), "steeple_spool_pending never counted the spooled events")
        bouncer:start()
        assert.truthy(server.wait_until(function() return stored("pgb-down-") == 8 end, 30),
            "replayed: " .. tostring(stored("pgb-down-")))
        assert.truthy(server.wait_until(function() return tonumber(srv:metric("steeple_spool_pending")) == 0 end, 10),
            "steeple_spool_pending did not return to 0")
        assert.equal("0", psql(reg.url, "SELECT count(*) FROM dead_letters"))
        -- reads work again once PgBouncer answers
        assert.truthy(server.wait_until(function() return auth.get(srv, "/api/me", token).status == 200 end, 10))
        -- PgBouncer down: the pool's connects failed (warnings, not errors)
        assert.same({}, srv:unexpected_errors())
    end)

    local function doctor(config_text)
        local cfg = server.tmpdir() .. "/config.lua"
        server.write_file(cfg, config_text)
        return server.run_binary({ "doctor", "--config", cfg }, env(), 60)
    end

    it("doctor detects PgBouncer and checks db.prepared_statements", function()
        local status, err, out = doctor("return { db = { prepared_statements = false } }")
        assert.equal(0, status, out .. err)
        assert.matches("ok    main: reached directly, or through PgBouncer with db.prepared_statements = false: "
            .. "through PgBouncer %(transaction pooling%); run steeple migrate against the server's own address, "
            .. "not this one; the server's statement_timeout is 0 %(set it on the role", out)
        -- the template is not opened through PgBouncer
        assert.matches("ok    main: template steeple_template present and current: present; its migrations are "
            .. "checked directly", out)
        status, err, out = doctor("return { db = { prepared_statements = true } }")
        assert.equal(1, status, out .. err)
        assert.matches("FAIL  main: reached directly, or through PgBouncer with db.prepared_statements = false: "
            .. "PgBouncer in front %(transaction pooling%) and db.prepared_statements is true", out)
        assert.matches("fix: set db.prepared_statements = false", out)
        assert.matches("1 checks failed", out)
        -- directly: no PgBouncer
        local direct = env()
        direct.DATABASE_URL = reg.url
        local cfg = server.tmpdir() .. "/config.lua"
        server.write_file(cfg, "return {}")
        status, err, out = server.run_binary({ "doctor", "--config", cfg }, direct, 60)
        assert.equal(0, status, out .. err)
        assert.matches("ok    main: reached directly, or through PgBouncer with db.prepared_statements = false: "
            .. "directly", out)
        -- doctor left PgBouncer no connection to the template: a church's
        -- database is still copied from it
        local res = auth.post(srv, "/api/auth/register", auth.church("pgb-after-doctor"))
        assert.equal(201, res.status, res.body)
        assert.same({}, srv:unexpected_errors())
    end)

    it("steeple migrate refuses a URL through PgBouncer", function()
        for _, what in ipairs { "registry", "tenants" } do
            local status, err = server.run_binary({ "migrate", what }, env(), 60)
            assert.equal(1, status, err)
            assert.matches("main is reached through PgBouncer %(transaction pooling%): migrations connect directly", err)
        end
    end)

    -- What the README's advice avoids: a statement prepared on one server
    -- session is named again on another session by the next connection
    -- PgBouncer gives it to (42P05 "already exists"), or is run by name
    -- where it was never prepared (26000 "does not exist").
    it("with db.prepared_statements = true: requests fail on prepared statements", function()
        local other = start(true)
        local failed = 0
        for _ = 1, 40 do
            local res = auth.get(other, "/api/me", token)
            assert.truthy(res.status == 200 or res.status == 500, res.body)
            if res.status == 500 then failed = failed + 1 end
        end
        local errs = other:unexpected_errors()
        other:stop(10)
        assert.truthy(failed > 0, "no request failed")
        assert.equal(failed, #errs)
        for _, line in ipairs(errs) do
            assert.truthy(line:find("42P05", 1, true) or line:find("26000", 1, true), line)
        end
    end)

    -- A database is renamed only with nobody connected, and PgBouncer keeps
    -- its server connection to the template being built: a registration
    -- through it cannot build the template and migrates its new database
    -- instead (the template is built by `steeple migrate tenants`, direct).
    it("registers without a template, migrating the new database", function()
        psql(pg.BASE_URL, "DROP DATABASE IF EXISTS steeple_template WITH (FORCE)")
        local res = auth.post(srv, "/api/auth/register", auth.church("pgb-no-template"))
        assert.equal(201, res.status, res.body)
        local db = psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")
        assert.equal("1", psql(url_of(db), "SELECT count(*) FROM admins"))
        assert.truthy(srv:log_contains("building the template failed; migrating the new database instead"))
        assert.equal("0", psql(pg.BASE_URL, "SELECT count(*) FROM pg_database WHERE datname LIKE 'steeple_template%'"))
        assert.equal("0", advisory_locks())
        assert.same({}, srv:unexpected_errors())
    end)

    it("drops a church whose database PgBouncer holds connections to", function()
        local res = auth.post(srv, "/api/auth/register", auth.church("pgb-drop"))
        assert.equal(201, res.status, res.body)
        local id = res.json.tenantId
        assert.equal(200, auth.get(srv, "/api/me", res.json.accessToken).status)
        local db = psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. id .. "'")
        assert.truthy(tonumber((psql(pg.BASE_URL, "SELECT count(*) FROM pg_stat_activity WHERE datname = '"
            .. db .. "'"))) > 0, "PgBouncer holds no server connection to " .. db)
        -- commands through PgBouncer need db.prepared_statements = false too
        local cfg = server.tmpdir() .. "/config.lua"
        server.write_file(cfg, "return { db = { prepared_statements = false } }")
        local status, err, out = server.run_binary({ "tenants", "drop", id, "--yes", "--config", cfg }, env(), 60)
        assert.equal(0, status, out .. err)
        assert.equal("0", psql(pg.BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. db .. "'"))
        assert.same({}, srv:unexpected_errors())
    end)

    -- Besides the idle server sessions of a dropped church's database: DROP
    -- DATABASE ... WITH (FORCE) ends them, and PgBouncer notes their
    -- farewell ("got packet 'E' from server when not linked").
    it("leaves no errors or warnings in PgBouncer's log", function()
        local bad = {}
        for line in bouncer:log_text():gmatch("[^\n]+") do
            if (line:match(" ERROR ") or line:match(" FATAL ") or line:match(" WARNING "))
                and not line:match(" WARNING S%-0x%x+: tenant_%x+/%S+ got packet 'E' from server when not linked$") then
                bad[#bad + 1] = line
            end
        end
        assert.same({}, bad)
    end)
end)
