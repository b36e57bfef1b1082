-- A broadcast across kill -9 of the whole server (API.md "Broadcasts": each
-- recipient gets at most one message per broadcast, whatever crashes or
-- restarts happen). The server, two workers, sends to a fake Telnyx API that
-- answers after a short delay, so calls are in flight when the master and
-- its workers are killed mid-broadcast; a new server on the same databases
-- and spool finishes it. Then, from the fake's request log and the
-- database: nobody was called twice; a recipient whose call had begun at the
-- kill is failed as an outcome never known (the dispatcher's at-most-once
-- rule), and there are no more of those than calls could be in flight;
-- everyone else got exactly one call, the claimed-but-not-yet-called ones
-- included; the broadcast is done and its counts add up.
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local WORKERS <const> = 2
local IN_FLIGHT <const> = 8       -- telnyx.max_in_flight: senders per worker
local RECIPIENTS <const> = 1000
local KILL_AFTER <const> = 250    -- calls at the fake before the kill
local PREFIX <const> = "+1555940"
local UNKNOWN <const> = "a broadcast call was cut short and its outcome is unknown"

describe("a broadcast killed with SIGKILL mid-run and restarted", function()
    local reg, tx, dir, fake_pid, fake_log, church, srv, options

    local function q(sql)
        return (psql(url_of(church.db), sql))
    end

    -- The numbers of our prefix the fake was asked to text: { [to] = { statuses } }.
    local function calls()
        local by = {}
        for line in (server.read_file(fake_log) or ""):gmatch("[^\n]+") do
            local r = cjson.decode(line)
            local to = r.body.to
            if type(to) == "string" and to:sub(1, #PREFIX) == PREFIX then
                by[to] = by[to] or {}
                table.insert(by[to], r.answer)
            end
        end
        return by
    end

    local function count(t)
        local n = 0
        for _ in pairs(t) do n = n + 1 end
        return n
    end

    -- No backend of a killed server is left in the database: what it
    -- committed is all it will ever commit.
    local function no_backends(url)
        return psql(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            .. "AND pid <> pg_backend_pid() AND backend_type = 'client backend'") == "0"
    end

    setup(function()
        reg = auth.registry("bkillspec")
        tx = telnyx.new()
        local port = server.free_port()
        dir = server.tmpdir()
        fake_log = dir .. "/fake.log"
        -- every answer 50 ms after its request
        server.write_file(dir .. "/chaos", "delay_ms=50\n")
        fake_pid = telnyx.start_fake(port, fake_log, dir .. "/none", dir .. "/chaos")
        options = {
            config = { workers = WORKERS, limits = { request_timeout_s = 30 },
                       telnyx = { api_base = "http://127.0.0.1:" .. port, send_attempts = 3, timeout_ms = 2000,
                                  max_per_second = 0, max_in_flight = IN_FLIGHT },
                       -- a slot every 20 ms: a sender holds its claimed recipient while it
                       -- waits for its slot, so the kill finds some claimed and not yet called
                       messaging = { rate_per_min = 3000, daily_cap = 0, quiet_start = "00:00", quiet_end = "00:00",
                                     dispatch_interval_s = 1 } },
            -- the restarted server takes over the killed one's spool
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    TELNYX_API_KEY = "test-api-key", STEEPLE_SPOOL_DIR = dir .. "/spool" },
        }
        srv = server.start(options)
        church = reg:church(srv, "bk", { phoneNumber = "+15559400001" })
    end)

    teardown(function()
        if srv then srv:stop() end
        if fake_pid then os.execute("kill " .. fake_pid .. " 2>/dev/null") end
        if reg then reg:drop() end
        server.cleanup()
    end)

    it("calls nobody twice and misses nobody", function()
        local list = q("INSERT INTO lists (name) VALUES ('everyone') RETURNING id")
        q(string.format([[
            INSERT INTO contacts (phone_number, consent, consent_source, consent_at)
            SELECT '%s' || lpad(i::text, 4, '0'), 'opted_in', 'admin', now() FROM generate_series(1, %d) i;
            INSERT INTO list_members (list_id, contact_id) SELECT '%s', id FROM contacts]],
            PREFIX, RECIPIENTS, list))
        srv:mark()
        local res = auth.call(srv, "POST", "/api/broadcasts", church.token, { text = "Hello", lists = { list } })
        assert.equal(201, res.status, res.body)
        local id = res.json.broadcast.id

        -- killed, master and workers at once, once part of it went out and
        -- while a call is under way (most likely still: it takes 50 ms)
        assert.truthy(server.wait_until(function()
            return count(calls()) >= KILL_AFTER and q([[SELECT count(*) FILTER (WHERE calling) > 0
                AND count(*) FILTER (WHERE NOT calling) > 0 FROM broadcast_recipients WHERE state = 'sending']]) == "t"
        end, 60), "the fake got " .. count(calls()) .. " calls")
        assert.equal(WORKERS, #srv:worker_pids())
        srv:kill(5 * server.SLOW)
        assert.same({}, srv:unexpected_errors())
        assert.truthy(server.wait_until(function() return no_backends(url_of(church.db)) end, 10),
            "the killed server's backends stay in the church's database")
        assert.truthy(server.wait_until(function() return no_backends(reg.url) end, 10),
            "the killed server's backends stay in the registry")

        -- what the kill left: recipients claimed (state sending), their call
        -- begun (calling) or not yet
        local begun, claimed = {}, {}
        for number, calling in q("SELECT phone_number, calling FROM broadcast_recipients WHERE broadcast_id = '"
                .. id .. "' AND state = 'sending'"):gmatch("(%S+)|(%a)") do
            if calling == "t" then begun[number] = true else claimed[number] = true end
        end
        local pending = tonumber(q("SELECT count(*) FROM broadcast_recipients WHERE broadcast_id = '" .. id
            .. "' AND state = 'pending'"))
        assert.truthy(pending > 0, "the broadcast had finished before the kill")
        assert.equal("sending", q("SELECT status FROM broadcasts WHERE id = '" .. id .. "'"))
        -- every sender holds one recipient at most
        assert.truthy(count(begun) + count(claimed) <= WORKERS * IN_FLIGHT,
            count(begun) .. " begun and " .. count(claimed) .. " claimed")
        print(string.format("# at the kill: %d numbers called, %d pending, %d claimed, %d begun",
            count(calls()), pending, count(claimed), count(begun)))

        -- The leases ran out while no server ran: the recipients' (60 s
        -- plus the call's timeout) and the church's turn (30 s) in the
        -- registry. Moved into the past here instead of waiting for them.
        q("UPDATE broadcast_recipients SET lease_until = now() - interval '1 second' WHERE state = 'sending'")
        psql(reg.url, "UPDATE broadcast_tenants SET due_at = now() WHERE tenant_id = '" .. church.id .. "'")

        srv = server.start(options)
        srv:mark()
        local b
        assert.truthy(server.wait_until(function()
            b = auth.call(srv, "GET", "/api/broadcasts/" .. id, church.token).json.broadcast
            return b.status == "done"
        end, 120), "the broadcast is " .. tostring(b and b.status) .. " after the restart")

        -- nobody called twice, and every call answered 200 (the fake refuses nothing here)
        local by = calls()
        for number, statuses in pairs(by) do
            assert.same({ 200 }, statuses, number)
        end
        -- a begun call is failed as unknown, whether it reached the fake or
        -- not; everyone else, claimed at the kill or not, got one call
        local rows = q("SELECT phone_number, state FROM broadcast_recipients WHERE broadcast_id = '" .. id .. "'")
        local n = 0
        for number, state in rows:gmatch("(%S+)|(%a+)") do
            n = n + 1
            if begun[number] then
                assert.equal("failed", state, number)
            else
                assert.equal("sent", state, number)
                assert.is_table(by[number], number .. " was never called")
            end
        end
        assert.equal(RECIPIENTS, n)
        for number in pairs(claimed) do assert.same({ 200 }, by[number], number) end
        local unknown = count(begun)
        assert.truthy(unknown <= WORKERS * IN_FLIGHT, unknown .. " unknown")
        assert.equal(unknown, srv:metric("steeple_broadcast_unknown_total"))
        assert.equal(unknown, srv:log_count(UNKNOWN))
        assert.same({ recipients = RECIPIENTS, queued = 0, sent = RECIPIENTS - unknown, delivered = 0,
                      failed = unknown, optedOut = 0, replies = 0 }, b.counts)
        assert.equal(b.counts.recipients, b.counts.sent + b.counts.failed + b.counts.optedOut)
        assert.equal(tostring(RECIPIENTS - unknown), q([[SELECT count(*) FROM messages m
            JOIN broadcast_recipients r ON r.message_id = m.id
            WHERE r.broadcast_id = ']] .. id .. [[' AND m.status = 'sent']]))
        local reached = 0
        for number in pairs(begun) do
            if by[number] then reached = reached + 1 end
        end
        print(string.format("# after the restart: %d sent, %d failed as unknown (%d of those reached the fake)",
            b.counts.sent, unknown, reached))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
