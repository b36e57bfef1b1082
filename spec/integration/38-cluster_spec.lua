-- Two steeple nodes (two serve processes, their own ports and spools, one
-- registry) behind a real HAProxy (support/haproxy.lua: checks on /ready,
-- webhooks retried on the other node when one dies): a church registered on
-- one node logs in on the other; webhooks spread over both; SIGHUP reloads
-- one node only; one node killed with SIGKILL under load loses no
-- acknowledged webhook once it is back with its spool.
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local haproxy = require "support.haproxy"

local psql, url_of = pg.psql, pg.url_of
local HOOK <const> = "/api/webhooks/telnyx/messaging"
local CHURCH <const> = "+15553800001"

local function stored_metric() return 'steeple_webhooks_total{result="stored"}' end

describe("two nodes behind HAProxy", function()
    local reg, tx, lb, church
    local nodes = {} -- name -> server
    local spools = {} -- name -> spool directory, kept over restarts

    local function start(name, port)
        spools[name] = spools[name] or server.tmpdir() .. "/spool"
        local env = { TELNYX_PUBLIC_KEY = tx.public_key, STEEPLE_SPOOL_DIR = spools[name] }
        for k, v in pairs(reg.env) do env[k] = v end
        nodes[name] = server.start {
            port = port,
            config = { workers = 1, limits = { request_timeout_s = 30 },
                       spool = { replay_interval_s = 0.2, after_ms = server.slow(1000) } },
            env = env,
        }
        return nodes[name]
    end

    -- what HAProxy's clients see: a "server" on its port for the helpers
    local function front() return { port = lb.port } end

    local function q(sql) return (psql(url_of(church.db), sql)) end

    -- provider id -> how many messages carry it, for ids starting with prefix
    local function stored_ids(prefix)
        local out = {}
        for id, n in q("SELECT provider_message_id, count(*) FROM messages WHERE provider_message_id LIKE '"
            .. prefix .. "%' GROUP BY 1"):gmatch("([^\n|]+)|(%d+)") do
            out[id] = tonumber(n)
        end
        return out
    end

    local function stored(prefix)
        return tonumber(q("SELECT count(*) FROM messages WHERE provider_message_id LIKE '" .. prefix .. "%'"))
    end

    -- Signed request specs for http.request through HAProxy: n texts with ids
    -- prefix1..prefixN from 10 senders.
    local function signed(prefix, n)
        local specs = {}
        for i = 1, n do
            local body = telnyx.received(prefix .. i, string.format("+1555381%04d", i % 10), CHURCH)
            specs[i] = { id = prefix .. i, port = lb.port, method = "POST", path = HOOK, body = body,
                         headers = tx:headers(body), timeout = 30 }
        end
        return specs
    end

    -- Holds the church's messages table for `seconds` (inserts wait, so
    -- webhooks are spooled); returns the holding session's mark.
    local function hold_messages(seconds) return pg.hold(url_of(church.db), "messages", seconds) end

    setup(function()
        reg = auth.registry("clusterspec")
        tx = telnyx.new()
        start("a")
        start("b")
        lb = haproxy.start { nodes = { { name = "a", port = nodes.a.port }, { name = "b", port = nodes.b.port } } }
        assert(lb:wait_status("a", "UP"), "node a never passed its check:\n" .. lb:log_text())
        assert(lb:wait_status("b", "UP"), "node b never passed its check:\n" .. lb:log_text())
    end)

    teardown(function()
        for _, srv in pairs(nodes) do srv:stop(10) end
        if lb then lb:stop() end
        if reg then reg:drop() end
        server.cleanup()
    end)

    before_each(function()
        for _, srv in pairs(nodes) do srv:mark() end
    end)

    it("registers a church on node a; its owner logs in on node b and through HAProxy", function()
        local body = auth.church("cluster", { phoneNumber = CHURCH })
        local res = auth.post(nodes.a, "/api/auth/register", body)
        assert.equal(201, res.status, res.body)
        church = { id = res.json.tenantId,
                   db = (psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")) }
        local login = auth.post(nodes.b, "/api/auth/login", { email = body.email, password = body.password })
        assert.equal(200, login.status, login.body)
        assert.equal(church.id, login.json.tenantId)
        -- a token made by node b is good on node a, and the other way round
        local me = auth.get(nodes.a, "/api/me", login.json.accessToken)
        assert.equal(200, me.status, me.body)
        assert.equal(CHURCH, me.json.church.phoneNumber)
        assert.equal(200, auth.get(nodes.b, "/api/me", res.json.accessToken).status)
        -- through HAProxy: logins and reads answered by both nodes in turn
        for _ = 1, 4 do
            local again = auth.post(front(), "/api/auth/login", { email = body.email, password = body.password })
            assert.equal(200, again.status, again.body)
            assert.equal(200, auth.get(front(), "/api/me", again.json.accessToken).status)
        end
        local stats = assert(lb:stats())
        assert.is_true(stats["api/a"].hrsp_2xx > 0 and stats["api/b"].hrsp_2xx > 0)
        for _, srv in pairs(nodes) do assert.same({}, srv:unexpected_errors()) end
    end)

    it("spreads signed webhooks over both nodes, each stored once", function()
        local before = { a = nodes.a:metric(stored_metric()), b = nodes.b:metric(stored_metric()) }
        local results = http.concurrent(signed("spread-", 40), 60)
        for i, res in ipairs(results) do
            assert.truthy(res.status and telnyx.accepted(res), "webhook " .. i .. ": " .. tostring(res.body or res.error))
        end
        assert.truthy(server.wait_until(function() return stored("spread-") == 40 end, 30),
            "stored: " .. stored("spread-"))
        for id, n in pairs(stored_ids("spread-")) do assert.equal(1, n, id) end
        local served = {}
        for name, srv in pairs(nodes) do
            served[name] = srv:metric(stored_metric()) - before[name]
            assert.is_true(served[name] > 0, "node " .. name .. " stored none")
        end
        print(string.format("# webhooks stored by node a: %d, by node b: %d", served.a, served.b))
        for _, srv in pairs(nodes) do assert.same({}, srv:unexpected_errors()) end
    end)

    it("reloads the node sent SIGHUP only, while traffic through HAProxy goes on", function()
        local reloads = 'steeple_script_reloads_total{result="ok"}'
        local before = { a = nodes.a:metric(reloads), b = nodes.b:metric(reloads) }
        local answers, done = {}, false
        local function client()
            while not done do
                local res, err = http.request { port = lb.port, path = "/ready", timeout = 10 }
                answers[#answers + 1] = res and res.status or err
            end
        end
        local function reloader()
            http.sleep(0.5)
            assert(nodes.a:sighup())
            for _ = 1, 50 do
                if nodes.a:log_contains("scripts reloaded") then break end
                http.sleep(0.1)
            end
            http.sleep(0.5)
            done = true
        end
        local ran = http.run({ client, client, reloader }, 60)
        for _, r in ipairs(ran) do assert.is_true(r.ok, r.err) end
        assert.truthy(nodes.a:wait_log("scripts reloaded"), "node a did not reload")
        assert.equal(before.a + 1, nodes.a:metric(reloads))
        assert.equal(before.b, nodes.b:metric(reloads))
        assert.is_nil(nodes.b:log_contains("scripts reloaded"))
        assert.is_true(#answers > 10, "only " .. #answers .. " requests ran")
        for i, status in ipairs(answers) do assert.equal(200, status, "request " .. i) end
        -- webhooks and reads through both nodes after the reload
        for i, res in ipairs(http.concurrent(signed("hup-", 6), 60)) do
            assert.truthy(res.status and telnyx.accepted(res), "webhook " .. i .. ": " .. tostring(res.body or res.error))
        end
        for _, srv in pairs(nodes) do assert.same({}, srv:unexpected_errors()) end
    end)

    it("stores every acknowledged webhook once when a node is killed under load and comes back with its spool",
        function()
        local specs = signed("kill-", 160)
        local queue, results, killed_at = 1, {}, nil
        local pending_at_kill = 0
        local function client()
            while queue <= #specs do
                local spec = specs[queue]
                queue = queue + 1
                local res, err = http.request(spec)
                results[#results + 1] = { id = spec.id, res = res, err = err, at = server.now() }
                http.sleep(0.02)
            end
        end
        local mark = hold_messages(server.slow(10))
        local lock_until = server.now() + server.slow(10)
        local function killer()
            -- node a has spooled some webhooks (the lock holds their inserts)
            for _ = 1, 100 do
                local res = http.request { port = nodes.a.port, path = "/metrics", timeout = 5 }
                pending_at_kill = res and tonumber(res.body:match("\nsteeple_spool_pending (%d+)")) or 0
                if pending_at_kill >= 3 then break end
                http.sleep(0.1)
            end
            nodes.a:kill()
            killed_at = server.now()
        end
        local ran = http.run({ client, client, client, client, client, client, client, client, killer }, 180)
        for _, r in ipairs(ran) do assert.is_true(r.ok, r.err) end
        assert.truthy(killed_at, "node a was not killed")
        assert.is_true(killed_at < lock_until, "the lock ended before the kill: nothing spooled on node a was "
            .. "left for its restart")
        assert.is_true(pending_at_kill >= 3, "node a spooled " .. pending_at_kill .. " webhooks before the kill")

        local acked, failed, after_kill = {}, {}, 0
        for _, r in ipairs(results) do
            if r.res and telnyx.accepted(r.res, "duplicate") then
                acked[#acked + 1] = r.id
                if r.at > killed_at then after_kill = after_kill + 1 end
            else
                local why = r.res and (r.res.status .. " " .. tostring(r.res.body)) or tostring(r.err)
                failed[#failed + 1] = r.id .. ": " .. why
                -- a failure is the cluster's (5xx, a transport error), never a refusal
                assert.is_true(r.res == nil or r.res.status >= 500, why)
            end
        end
        assert.equal(#specs, #acked + #failed)
        assert.is_true(after_kill > 0, "no webhook was acknowledged after the kill")
        assert.truthy(lb:wait_status("a", "DOWN"), "HAProxy still sends to the dead node")

        -- the lock ends; node a comes back on its port with its spool and replays it
        assert.truthy(server.wait_until(function()
            return q("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%" .. mark .. "%' "
                .. "AND pid <> pg_backend_pid()") == "0"
        end, 30), "the lock was never released")
        local dead = nodes.a
        start("a", dead.port)
        assert.truthy(lb:wait_status("a", "UP"), "node a never came back in HAProxy")
        local replayed = 0
        assert.truthy(server.wait_until(function()
            local ids = stored_ids("kill-")
            for _, id in ipairs(acked) do
                if ids[id] == nil then return false end
            end
            replayed = nodes.a:metric("steeple_spool_replayed_total")
            return nodes.a:metric("steeple_spool_pending") == 0 and nodes.b:metric("steeple_spool_pending") == 0
        end, 60), "acknowledged webhooks were not all stored")
        local ids = stored_ids("kill-")
        for _, id in ipairs(acked) do assert.equal(1, ids[id], id) end
        for id, n in pairs(ids) do assert.equal(1, n, id) end
        -- what node a had spooled before it died, its successor applied
        assert.is_true(replayed >= pending_at_kill, string.format("replayed %d of %d", replayed, pending_at_kill))

        -- the backends' totals over their servers
        local stats = assert(lb:stats())
        local retries, redispatches = 0, 0
        for _, name in ipairs { "webhooks/BACKEND", "api/BACKEND" } do
            retries = retries + (tonumber(stats[name].wretr) or 0)
            redispatches = redispatches + (tonumber(stats[name].wredis) or 0)
        end
        print(string.format("# kill under load: %d webhooks sent, %d acknowledged (%d after the kill), %d failed%s",
            #specs, #acked, after_kill, #failed, #failed > 0 and (" (" .. table.concat(failed, "; ") .. ")") or ""))
        print(string.format("# HAProxy: %d retries, %d redispatches; node a had %d spooled at the kill, "
            .. "its restart replayed %d", retries, redispatches, pending_at_kill, replayed))
        assert.same({}, nodes.b:unexpected_errors())
        assert.same({}, nodes.a:unexpected_errors())
        nodes.a:assert_stops_cleanly()
        nodes.b:assert_stops_cleanly()
    end)
end)
