-- The durable spool: webhooks acknowledged while the databases are down are
-- applied once they are back, exactly once, across restarts and kill -9.
-- Runs against a private cluster that the spec stops and starts.
local server = require "support.server"
local http = require "support.http"
local auth = require "support.auth"
local telnyx = require "support.telnyx"

local HOOK <const> = "/api/webhooks/telnyx/messaging"
local CHURCH <const> = "+15553000001"

local function capture(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    local ok = p:close()
    return (out:gsub("%s+$", "")), ok
end

describe("spool", function()
    local DIR = "var/test-pg-spool-" .. auth.STAMP
    local spool_dir = server.tmpdir() .. "/spool"
    local tx = telnyx.new()
    local base_url, reg_url, tenant_url, env, srv

    local function pg(cmd)
        local out, ok = capture(string.format("cd %s && bash scripts/pg.sh --dir %s --tcp %s 2>&1",
            server.quote(server.ROOT), server.quote(DIR), cmd))
        assert(ok, "pg.sh " .. cmd .. " failed:\n" .. out)
        return out
    end

    local function psql(url, sql)
        return (capture("psql " .. server.quote(url) .. " -XAtq -c " .. server.quote(sql) .. " 2>&1"))
    end

    local function stored(prefix)
        return tonumber(psql(tenant_url, "SELECT count(*) FROM messages WHERE provider_message_id LIKE '"
            .. prefix .. "%'"))
    end

    local function stored_once(id)
        return psql(tenant_url, "SELECT count(*) FROM messages WHERE provider_message_id = '" .. id .. "'") == "1"
    end

    local function start()
        srv = server.start {
            config = { workers = 2, spool = { replay_interval_s = 0.2, after_ms = 300 },
                       -- statements time out before the slow case's lock goes: a replay
                       -- that times out must be tried again, not dead-lettered
                       db = { connect_timeout_ms = server.slow(500), acquire_timeout_ms = server.slow(1000),
                              statement_timeout_ms = server.slow(1000), breaker_open_s = 0.5 } },
            env = env,
        }
    end


    setup(function()
        pg("start")
        base_url = pg("url")
        reg_url = base_url:gsub("/[^/?]*$", "/spoolreg")
        psql(base_url, "CREATE DATABASE spoolreg")
        env = { DATABASE_URL = reg_url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                STEEPLE_SPOOL_DIR = spool_dir }
        assert.equal(0, (server.run_binary({ "migrate", "registry" }, env, 60)))
        assert.equal(0, (server.run_binary({ "migrate", "tenants" }, env, 120)))
        start()
        local res = auth.post(srv, "/api/auth/register", auth.church("spool", { phoneNumber = CHURCH }))
        assert.equal(201, res.status, res.body)
        local dbname = psql(reg_url, "SELECT db_name FROM tenants")
        tenant_url = base_url:gsub("/[^/?]*$", "/" .. dbname)
        -- one message first: the number is now in the routing cache (a busy
        -- machine may spool it: after_ms is short here)
        local warm = tx:post(srv, HOOK, telnyx.received("sp-warm", "+15553009999", CHURCH))
        assert.truthy(warm.status == 200 or (warm.status == 202 and warm.json.status == "spooled"), warm.body)
        assert.truthy(server.wait_until(function() return stored_once("sp-warm") end, 15), "sp-warm never stored")
    end)

    teardown(function()
        if srv then srv:stop(10) end
        server.cleanup()
        pcall(pg, "destroy")
    end)

    it("spools while the databases are down and applies every event once after a restart", function()
        pg("stop")
        for i = 1, 10 do
            local res = tx:post(srv, HOOK, telnyx.received("sp-down-" .. i, "+1555301" .. string.format("%04d", i), CHURCH))
            assert.equal(202, res.status, res.body)
            assert.same({ status = "spooled" }, res.json)
        end
        -- a number nobody has: the registry cannot say, so it is spooled too
        assert.equal(202, tx:post(srv, HOOK, telnyx.received("sp-lost", "+15553010000", "+15553999999")).status)
        assert.truthy(server.wait_until(function() return (tonumber(srv:metric("steeple_spool_pending")) or 0) >= 11 end, 5),
            "steeple_spool_pending never counted the spooled events")
        srv:stop(10)
        pg("start")
        start()
        assert.truthy(server.wait_until(function() return stored("sp-down-") == 10 end, 20),
            "spooled messages were not applied: " .. tostring(stored("sp-down-")))
        assert.truthy(server.wait_until(function()
            return psql(reg_url, "SELECT count(*) FROM dead_letters WHERE event_type = 'message.received'") == "1"
        end, 10), psql(reg_url, "SELECT event_id, reason FROM dead_letters"))
        -- the ten applied and the dead letter, by the restarted server's replay
        assert.truthy(server.wait_until(function() return srv:metric("steeple_spool_replayed_total") >= 11 end, 5),
            "steeple_spool_replayed_total reads " .. srv:metric("steeple_spool_replayed_total"))
        -- the same events again are duplicates (or spooled, on a busy machine,
        -- and found to be duplicates by the replay)
        local res = tx:post(srv, HOOK, telnyx.received("sp-down-3", "+15553010003", CHURCH))
        assert.truthy(res.json.status == "duplicate" or res.json.status == "spooled", res.body)
        assert.truthy(server.wait_until(function() return tonumber(srv:metric("steeple_spool_pending")) == 0 end, 10),
            "steeple_spool_pending did not return to 0")
        assert.equal(10, stored("sp-down-"))
    end)

    it("spools when the church's database is slower than spool.after_ms", function()
        os.execute("psql " .. server.quote(tenant_url) .. " -XAtq -c 'BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE;"
            .. " SELECT pg_sleep(" .. server.slow(3) .. "); COMMIT;' >/dev/null 2>&1 &")
        assert.truthy(server.wait_until(function()
            return psql(tenant_url, "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted "
                .. "AND relation = 'messages'::regclass") == "1"
        end, 5), "the lock was not taken")
        local res = tx:post(srv, HOOK, telnyx.received("sp-slow", "+15553050001", CHURCH))
        assert.equal(202, res.status, res.body)
        assert.same({ status = "spooled" }, res.json)
        assert.truthy(server.wait_until(function() return stored_once("sp-slow") end, 15), "never applied")
        assert.equal("0", psql(reg_url, "SELECT count(*) FROM dead_letters WHERE body LIKE '%sp-slow%'"))
    end)

    it("loses no acknowledged webhook when the whole server is killed with SIGKILL", function()
        pg("stop")
        local acked, n = {}, 120
        local funcs = {}
        for i = 1, n do
            local id = "sp-kill-" .. i
            local body = telnyx.received(id, "+1555302" .. string.format("%04d", i), CHURCH)
            local headers = tx:headers(body)
            funcs[i] = function()
                http.sleep(i * 0.004)
                local res = http.request { port = srv.port, method = "POST", path = HOOK, body = body,
                    headers = headers, timeout = 10 }
                if res and res.status >= 200 and res.status < 300 then acked[#acked + 1] = id end
            end
        end
        funcs[n + 1] = function()
            -- killed once the first webhooks are acknowledged, with others in flight
            local deadline = http.now() + server.slow(10)
            while #acked == 0 and http.now() < deadline do http.sleep(0.01) end
            local pids = srv:worker_pids()
            os.execute("kill -9 " .. srv.pid .. " " .. table.concat(pids, " ") .. " 2>/dev/null")
        end
        http.run(funcs, 30)
        srv:wait_exit(5)
        assert.truthy(#acked > 0, "nothing was acknowledged before the kill")
        assert.truthy(#acked < n, "everything was acknowledged before the kill")
        pg("start")
        start()
        local function all_stored()
            for _, id in ipairs(acked) do
                if not stored_once(id) then return false end
            end
            return true
        end
        assert.truthy(server.wait_until(all_stored, 30), "an acknowledged webhook was lost")
        local dup = psql(tenant_url, "SELECT count(*) FROM (SELECT provider_message_id FROM messages "
            .. "GROUP BY 1 HAVING count(*) > 1) d")
        assert.equal("0", dup)
    end)

    it("steeple spool status and replay, while no server runs", function()
        local status, err = server.run_binary({ "spool", "status" }, env, 30)
        assert.equal(1, status) -- the running server owns the spool
        assert.truthy(err:find("in use by a running server", 1, true), err)
        pg("stop")
        for i = 1, 3 do
            assert.equal(202, tx:post(srv, HOOK, telnyx.received("sp-cli-" .. i, "+155530400" .. i .. "0", CHURCH)).status)
        end
        srv:stop(10)
        local out
        status, err, out = server.run_binary({ "spool", "status" }, env, 30)
        assert.equal(0, status, err)
        assert.truthy(out:find("records waiting 3 ", 1, true), out)
        status, err, out = server.run_binary({ "spool", "replay" }, env, 30)
        assert.equal(1, status, err) -- the databases are still down
        assert.truthy(out:find("3 still waiting", 1, true), out)
        pg("start")
        status, err, out = server.run_binary({ "spool", "replay" }, env, 30)
        assert.equal(0, status, err .. out)
        assert.truthy(out:find("applied 3; nothing waiting", 1, true), out)
        assert.equal(3, stored("sp-cli-"))
        assert.equal(2, (server.run_binary({ "spool", "flush" }, env, 30)))
        start()
    end)

    it("skips a torn spool file at start-up and keeps serving", function()
        srv:stop(10)
        local f = assert(io.open(spool_dir .. "/w1-0000009999.spool", "wb"))
        f:write("STPL\0\0\1\0garbage that ends early")
        f:close()
        start()
        assert.truthy(srv:wait_log("bytes from there are skipped", 5), "no warning about the torn file")
        assert.equal(200, tx:post(srv, HOOK, telnyx.received("sp-after-torn", "+15553030001", CHURCH)).status)
        assert.truthy(stored_once("sp-after-torn"))
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
