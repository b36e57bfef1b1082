-- Spool replay church by church: one church whose database is gone holds
-- back only its own spooled events; the other churches' are applied, each
-- exactly once (across a restart too), and the lost church's go to the dead
-- letters after spool.give_up_s. Runs against a private cluster that the
-- spec stops and starts.
local server = require "support.server"
local auth = require "support.auth"
local telnyx = require "support.telnyx"

local HOOK <const> = "/api/webhooks/telnyx/messaging"
local PHONES <const> = { a = "+15556000001", b = "+15556000002", c = "+15556000003" }
local ROUNDS <const> = 6

local function capture(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    local ok = p:close()
    return (out:gsub("%s+$", "")), ok
end

describe("spool replay with a church gone", function()
    local DIR = "var/test-pg-spoolc-" .. auth.STAMP
    local spool_dir = server.tmpdir() .. "/spool"
    local tx = telnyx.new()
    local base_url, reg_url, env, srv
    local dbs = {}

    local function pg(cmd)
        local out, ok = capture(string.format("cd %s && bash scripts/pg.sh --dir %s --tcp %s 2>&1",
            server.quote(server.ROOT), server.quote(DIR), cmd))
        assert(ok, "pg.sh " .. cmd .. " failed:\n" .. out)
        return out
    end

    local function psql(url, sql)
        return (capture("psql " .. server.quote(url) .. " -XAtq -c " .. server.quote(sql) .. " 2>&1"))
    end

    local function url_of(dbname)
        return (base_url:gsub("/[^/?]*$", "/" .. dbname))
    end

    local function start(give_up_s)
        srv = server.start {
            config = { workers = 2, spool = { replay_interval_s = 0.2, after_ms = 300, give_up_s = give_up_s },
                       db = { connect_timeout_ms = server.slow(500), acquire_timeout_ms = server.slow(1000),
                              statement_timeout_ms = server.slow(1000), breaker_open_s = 0.5 } },
            env = env,
        }
    end

    -- How often each of the church's spooled messages is stored: { [id] = n }.
    local function stored(church)
        local out = psql(url_of(dbs[church]), "SELECT provider_message_id || ' ' || count(*) FROM messages "
            .. "WHERE provider_message_id LIKE 'spc-" .. church .. "-%' GROUP BY provider_message_id")
        local counts = {}
        for id, n in out:gmatch("(%S+) (%d+)") do counts[id] = tonumber(n) end
        return counts
    end

    local function all_stored_once(church)
        local counts, n = stored(church), 0
        for _, c in pairs(counts) do
            if c ~= 1 then return false end
            n = n + 1
        end
        return n == ROUNDS
    end

    local function dead_letters()
        return tonumber(psql(reg_url, "SELECT count(*) FROM dead_letters WHERE body LIKE '%spc-c-%'"))
    end

    setup(function()
        pg("start")
        base_url = pg("url")
        reg_url = url_of("spoolcreg")
        psql(base_url, "CREATE DATABASE spoolcreg")
        env = { DATABASE_URL = reg_url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                STEEPLE_SPOOL_DIR = spool_dir }
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 60)))
        assert.equal(0, (server.run_binary({ "migrate", "tenants" }, env, 120)))
        start(3600)
        for church, phone in pairs(PHONES) do
            local res = auth.post(srv, "/api/auth/register", auth.church("spc" .. church, { phoneNumber = phone }))
            assert.equal(201, res.status, res.body)
            dbs[church] = psql(reg_url, "SELECT db_name FROM tenants WHERE phone_number = '" .. phone .. "'")
        end
    end)

    teardown(function()
        if srv then srv:stop(10) end
        server.cleanup()
        pcall(pg, "destroy")
    end)

    it("applies the other churches' events once each and dead-letters the lost church's", function()
        -- the registry and every church down: all spooled, the lost church's first
        pg("stop")
        for i = 1, ROUNDS do
            for _, church in ipairs { "c", "a", "b" } do
                local body = telnyx.received("spc-" .. church .. "-" .. i, "+1555601" .. string.format("%04d", i),
                    PHONES[church])
                local res = tx:post(srv, HOOK, body)
                assert.equal(202, res.status, res.body)
                assert.same({ status = "spooled" }, res.json)
            end
        end
        assert.truthy(server.wait_until(function()
            return tonumber(srv:metric("steeple_spool_pending")) == 3 * ROUNDS
        end, 5), "steeple_spool_pending never counted the spooled events")
        srv:stop(10)
        -- back up, but church c's database is gone (its registry entry stays)
        pg("start")
        psql(base_url, "DROP DATABASE " .. dbs.c .. " WITH (FORCE)")
        start(3600)
        assert.truthy(server.wait_until(function()
            return all_stored_once("a") and all_stored_once("b")
        end, 20), "the other churches' events were not all applied")
        assert.truthy(server.wait_until(function()
            return tonumber(srv:metric("steeple_spool_pending")) == ROUNDS
        end, 10), "pending: " .. tostring(srv:metric("steeple_spool_pending")))
        assert.equal(0, dead_letters()) -- spool.give_up_s has not passed
        assert.truthy(srv:log_contains("spooled webhooks of a church wait"), "the waiting church was not logged")
        assert.same({}, srv:unexpected_errors())

        -- after a restart the events applied out of order are not handed out
        -- again; the lost church's go to the dead letters after spool.give_up_s
        srv:stop(10)
        start(1)
        assert.truthy(server.wait_until(function() return dead_letters() == ROUNDS end, 20),
            "dead letters: " .. dead_letters())
        assert.truthy(server.wait_until(function()
            return tonumber(srv:metric("steeple_spool_pending")) == 0
        end, 10), "pending: " .. tostring(srv:metric("steeple_spool_pending")))
        assert.equal(0, srv:metric('steeple_webhooks_total{result="duplicate"}'))
        assert.equal(0, srv:metric('steeple_webhooks_total{result="stored"}'))
        assert.truthy(all_stored_once("a") and all_stored_once("b"))
        assert.equal(tostring(ROUNDS), psql(reg_url, "SELECT count(*) FROM dead_letters WHERE body LIKE '%spc-c-%' "
            .. "AND reason = 'the church''s database no longer exists' AND phone_number = '" .. PHONES.c .. "'"))
        assert.same({}, srv:unexpected_errors { "church database no longer exists" })
    end)

    it("steeple spool replay applies what it can and reports the rest", function()
        pg("stop")
        for i = 1, 2 do
            for _, church in ipairs { "c", "a" } do
                local body = telnyx.received("spc-cli-" .. church .. "-" .. i, "+1555602000" .. i, PHONES[church])
                assert.equal(202, tx:post(srv, HOOK, body).status)
            end
        end
        srv:stop(10)
        pg("start")
        -- c's database is still gone; give_up_s is not in reach of one pass
        local status, err, out = server.run_binary({ "spool", "replay" }, env, 60)
        assert.equal(1, status, err .. out)
        assert.truthy(out:find("applied 2; 2 still waiting", 1, true), out)
        assert.equal("2", psql(url_of(dbs.a), "SELECT count(*) FROM messages WHERE provider_message_id LIKE 'spc-cli-a-%'"))
        start(1)
        assert.truthy(server.wait_until(function()
            return tonumber(psql(reg_url, "SELECT count(*) FROM dead_letters WHERE body LIKE '%spc-cli-c-%'")) == 2
        end, 20), "the lost church's events were not dead-lettered")
        assert.same({}, srv:unexpected_errors { "church database no longer exists" })
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
