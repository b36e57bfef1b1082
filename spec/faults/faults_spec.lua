-- Faults under steady mixed load: logins, conversation reads and signed
-- webhooks from build/faults/loadgen (closed loop, webhooks retried with the
-- same id as the provider does). Each case injects one fault, then checks
-- what the contract promises: the answers by kind (a 503 always with
-- Retry-After), every acknowledged webhook stored exactly once, and service
-- back within the circuit breaker's own settings plus a margin that grows
-- with how busy the machine is. How long recovery took and the throughput
-- during the fault against the same load without it are measured and
-- reported, not asserted: they depend on the machine. Results:
-- var/faults/results.md.
local server = require "support.server"
local faults = require "support.faults"
local socket = require "socket"

local outcomes, failures, describe_counts = faults.outcomes, faults.failures, faults.describe

describe("under mixed load", function()
    local bench, baseline

    setup(function()
        bench = faults.bench(4)
    end)

    teardown(function()
        server.cleanup()
        if bench then bench:destroy() end
    end)

    -- Failures outside the allowed "kind outcome" keys, as text (nil when none).
    local function unexpected(r, allowed, from, to)
        local bad = {}
        for key, n in pairs((failures(r, from, to))) do
            if not allowed[key] then bad[key] = n end
        end
        return next(bad) and describe_counts(bad) or nil
    end

    local function answered(results)
        local ok, all = 0, 0
        for _, r in ipairs(results) do
            for outcome, n in pairs(outcomes(r)) do
                all = all + n
                if outcome:match("^2") then ok = ok + n end
            end
        end
        return ok, all
    end

    -- How long after the end of the fault (healed: seconds of gen's load) the
    -- service was back, measured as soon as the load is over: the load's own
    -- last failure, or, when failures lasted until the load ended, the moment
    -- the server serves every kind again (waited for until the bound).
    -- Returns { took, served, bound, how }.
    local function recovery_of(srv, gen, healed)
        local bound, how = faults.recovery_bound()
        local rec = { took = faults.recovery(gen.result, healed), served = true, bound = bound, how = how }
        if healed + rec.took >= gen.seconds then
            rec.served = bench:serves(srv, gen.t0 + healed + bound)
            rec.took = socket.gettime() - (gen.t0 + healed)
        end
        return rec
    end

    -- The contract: service back within the recovery bound. The recovery
    -- itself goes to results.md.
    local function assert_recovered(name, rec)
        faults.note(string.format("%s: back after %.0f s; the bound is %s", name, rec.took, rec.how))
        assert.is_true(rec.served, string.format("not serving %.0f s after the fault ended; the bound is %s",
            rec.took, rec.how))
        assert.is_true(rec.took <= rec.bound, string.format("recovery took %.0f s; the bound is %s", rec.took, rec.how))
    end

    -- Checks exactly-once storage and records a row of the results table.
    -- gens: the loads of the case; window: {from, to} of the fault (seconds of
    -- the load); healed: when the fault ended.
    local function settle_and_record(name, gens, window, healed, note)
        local results, fails, acked, stored, missing, doubled, unknown, settle = {}, {}, 0, 0, 0, 0, 0, 0
        local recovery, rate, before = 0, 0, 0
        for _, gen in ipairs(gens) do
            local s = bench:settled(gen, 90)
            results[#results + 1] = gen.result
            acked, stored = acked + s.acked, stored + s.stored
            missing, doubled, unknown = missing + s.missing, doubled + s.doubled, s.unknown + unknown
            settle = math.max(settle, s.settle_s)
            for key, n in pairs((failures(gen.result))) do fails[key] = (fails[key] or 0) + n end
            recovery = math.max(recovery, faults.recovery(gen.result, healed))
            rate = rate + faults.rate(gen.result, window[1], window[2])
            -- the same run before the fault (its first second is warm-up)
            before = before + faults.rate(gen.result, 1, window[1])
        end
        local ok, all = answered(results)
        local ratio = baseline and string.format("%.2f (%.2f of the seconds before it)", rate / baseline,
            rate / math.max(before, 1e-9)) or "1.00 (baseline)"
        faults.record(name, {
            answered = string.format("%d / %d", ok, all),
            failures = describe_counts(fails),
            webhooks = string.format("%d → %d (missing %d, doubled %d)", acked, stored - unknown, missing, doubled),
            recovery = string.format("%.0f s (spool settled %.1f s later)", recovery, settle),
            ratio = ratio .. (note and (" " .. note) or ""),
        })
        assert.are.equal(0, missing, "acknowledged webhooks not stored")
        assert.are.equal(0, doubled, "webhooks stored twice")
        assert.are.equal(0, unknown, "stored webhooks nobody sent")
        assert.is_true(acked > 0, "no webhook was acknowledged")
        return rate, recovery
    end

    it("serves the load without faults (the baseline)", function()
        local srv = bench:serve()
        local gen = bench:load(srv, { seconds = 15 })
        local r = gen:wait()
        assert.is_nil(unexpected(r, {}), "failures without a fault")
        baseline = settle_and_record("none (baseline, 15 s)", { gen }, { 2, 13 }, 0)
        if baseline < 50 then
            faults.note(string.format("baseline: only %.0f answers/s (a busy machine); the throughput ratios "
                .. "below compare with it", baseline))
        end
        baseline = math.max(baseline, 1e-9)
        assert.is_true(srv:stop())
    end)

    it("keeps serving with the registry's PostgreSQL stopped for 20 s", function()
        local srv = bench:serve()
        local gen = bench:load(srv, { seconds = 34 })
        gen:at(4, function() bench.registry:stop() end)
        gen:at(24, function() bench.registry:start() end, "healed")
        local r = gen:wait()
        local rec = recovery_of(srv, gen, gen.events.healed)
        -- logins need the registry; reads and webhooks of known churches do not
        local bad = unexpected(r, { ["login 503"] = true, ["read 503"] = true })
        assert.is_nil(bad, "unexpected failures: " .. tostring(bad))
        assert.is_true((outcomes(r, "login", 6, 23)["503"] or 0) > 0, "logins did not notice the registry was down")
        settle_and_record("registry stopped 20 s", { gen }, { 4, 24 }, gen.events.healed)
        assert_recovered("registry stopped 20 s", rec)
        assert.is_true(srv:alive())
        assert.is_true(srv:stop())
    end)

    it("keeps the churches of one tenant server unaffected while the other is stopped", function()
        local up, down = bench:on(bench.a), bench:on(bench.b)
        assert.is_true(#up > 0 and #down > 0, "churches on one tenant server only")
        local srv = bench:serve()
        local gen_up = bench:load(srv, { seconds = 26, churches = up, logins = 1, reads = 2, webhooks = 4, tag = "up" })
        local gen_down = bench:load(srv, { seconds = 26, churches = down, logins = 1, reads = 2, webhooks = 4,
            tag = "down" })
        gen_down:at(3, function() bench.b:stop() end)
        gen_down:at(18, function() bench.b:start() end, "healed")
        gen_up:wait()
        local r = gen_down:wait()
        -- (the other server's churches see no failure: the recovery is gen_down's)
        local rec = recovery_of(srv, gen_down, gen_down.events.healed)
        assert.is_nil(unexpected(gen_up.result, {}), "the other server's churches saw failures")
        local bad = unexpected(r, { ["login 503"] = true, ["read 503"] = true })
        assert.is_nil(bad, "unexpected failures: " .. tostring(bad))
        assert.is_true((outcomes(r, "read", 5, 17)["503"] or 0) > 0, "reads did not notice the server was down")
        local healed = gen_down.events.healed - (gen_up.t0 - gen_down.t0)
        settle_and_record("one tenant server of two stopped 15 s", { gen_up, gen_down }, { 3, 18 },
            math.min(healed, gen_down.events.healed))
        assert_recovered("one tenant server of two stopped 15 s", rec)
        assert.is_true(srv:stop())
    end)

    it("recovers from pg_terminate_backend of every connection each second for 10 s", function()
        local srv = bench:serve()
        local gen = bench:load(srv, { seconds = 20 })
        local killed = 0
        for t = 3, 12 do
            gen:at(t, function()
                for _, cl in ipairs { bench.registry, bench.a, bench.b } do killed = killed + cl:terminate_steeple() end
            end, "last")
        end
        -- the end of the fault: 13, or later when the last kill ran late
        local healed = math.max(13, math.ceil(gen.events.last))
        local r = gen:wait()
        local rec = recovery_of(srv, gen, healed)
        assert.is_true(killed >= 10, "only " .. killed .. " connections terminated")
        local bad = unexpected(r, { ["login 503"] = true, ["read 503"] = true })
        assert.is_nil(bad, "unexpected failures: " .. tostring(bad))
        settle_and_record("pg_terminate_backend every 1 s for 10 s", { gen }, { 3, 13 }, healed,
            "(" .. killed .. " connections ended)")
        assert_recovered("pg_terminate_backend every 1 s for 10 s", rec)
        assert.is_true(srv:stop())
    end)

    it("restarts a worker killed with SIGKILL while the other keeps serving", function()
        local srv = bench:serve()
        local before = srv:worker_pids()
        assert.are.equal(2, #before)
        local gen = bench:load(srv, { seconds = 15 })
        gen:at(4, function() srv:signal("KILL", before[1]) end, "killed")
        local replaced = server.wait_until(function()
            local now = srv:worker_pids()
            return #now == 2 and now[1] ~= before[1] and now[2] ~= before[1]
        end, 15)
        local replaced_at = gen:now()
        local r = gen:wait()
        local rec = recovery_of(srv, gen, 4)
        assert.is_true(replaced, "the master did not restart the worker")
        -- the requests in flight on the killed worker break, and only those
        local bad = unexpected(r, { ["login reset"] = true, ["read reset"] = true, ["webhook reset"] = true })
        assert.is_nil(bad, "unexpected failures: " .. tostring(bad))
        local _, broken = failures(r)
        assert.is_true(broken <= 13, broken .. " requests broke (13 clients)")
        assert.is_nil(unexpected(r, {}, math.ceil(replaced_at) + 1), "failures after the restart")
        settle_and_record("a worker killed (SIGKILL)", { gen }, { 4, 6 }, 4)
        assert_recovered("a worker killed (SIGKILL)", rec)
        assert.is_true(srv:alive())
        assert.is_true(srv:stop())
    end)

    it("loses no acknowledged webhook when the whole server is killed and restarted", function()
        local spool = server.tmpdir() .. "/spool"
        local srv = bench:serve { spool = spool }
        local port = srv.port
        local gen = bench:load(srv, { seconds = 20, logins = 1, reads = 2, webhooks = 12 })
        gen:at(5, function()
            local workers = srv:worker_pids()
            srv:signal("KILL")
            for _, pid in ipairs(workers) do srv:signal("KILL", pid) end
        end, "killed")
        assert.is_truthy(srv:wait_exit(5), "the master outlived SIGKILL")
        socket.sleep(math.max(0, 7 - gen:now()))
        local again = bench:serve { spool = spool, port = port }
        gen.events.healed = gen:now()
        local r = gen:wait()
        local rec = recovery_of(again, gen, math.ceil(gen.events.healed))
        local transport = { refused = true, reset = true, timeout = true, error = true }
        local allowed = {}
        for _, kind in ipairs { "login", "read", "webhook" } do
            for outcome in pairs(transport) do allowed[kind .. " " .. outcome] = true end
        end
        local bad = unexpected(r, allowed)
        assert.is_nil(bad, "unexpected failures: " .. tostring(bad))
        assert.is_true((failures(r, 5, 7)["webhook refused"] or 0) > 0, "the load did not see the server down")
        settle_and_record("whole server killed (SIGKILL), restarted 2 s later", { gen },
            { 5, math.ceil(gen.events.healed) }, math.ceil(gen.events.healed))
        assert_recovered("whole server killed (SIGKILL), restarted 2 s later", rec)
        assert.is_true(again:stop())
    end)

    it("serves without a failure through a SIGHUP every 100 ms for 10 s", function()
        local srv = bench:serve()
        local gen = bench:load(srv, { seconds = 16 })
        local sent = 0
        for i = 0, 99 do
            gen:at(4 + i * 0.1, function() if srv:sighup() then sent = sent + 1 end end)
        end
        local r = gen:wait()
        assert.are.equal(100, sent)
        assert.is_nil(unexpected(r, {}), "failures during reloads")
        settle_and_record("SIGHUP every 100 ms for 10 s", { gen }, { 4, 14 }, 14)
        assert.is_true(srv:alive())
        assert.is_true(srv:stop())
    end)

    it("keeps the running scripts when a SIGHUP finds a broken script", function()
        local srv = bench:serve { config = { log = { level = "info" } } }
        local gen = bench:load(srv, { seconds = 12 })
        local path = srv.scripts .. "/routes/ops.lua"
        local good = assert(server.read_file(path))
        gen:at(4, function()
            server.write_file(path, good .. "\nthis is not lua (\n")
            srv:sighup()
        end)
        local failed = srv:wait_log("script reload failed", 5)
        gen:at(8, function()
            server.write_file(path, good)
            srv:sighup()
        end)
        local r = gen:wait()
        assert.is_truthy(failed, "no reload failure was logged")
        assert.is_nil(unexpected(r, {}), "failures with a broken script")
        settle_and_record("SIGHUP with a broken script", { gen }, { 4, 8 }, 8)
        assert.is_true(srv:stop())
    end)

    it("answers 503, never 2xx without a durable record, when the spool's disk is full", function()
        if server.capture("id -u"):match("^0") == nil then
            pending("mounting a small tmpfs needs root")
            return
        end
        local spool = server.tmpdir() .. "/spool"
        assert(os.execute("mkdir -p " .. server.quote(spool) .. " && mount -t tmpfs -o size=128k tmpfs "
            .. server.quote(spool)), "cannot mount a tmpfs")
        local srv
        local ok, err = pcall(function()
            srv = bench:serve { spool = spool }
            local gen = bench:load(srv, { seconds = 26, logins = 0, reads = 2, webhooks = 8 })
            -- every church's database down: every webhook goes to the spool
            gen:at(3, function() bench.a:stop(); bench.b:stop() end)
            gen:at(15, function() bench.a:start(); bench.b:start() end, "healed")
            local r = gen:wait()
            local rec = recovery_of(srv, gen, gen.events.healed)
            local bad = unexpected(r, { ["read 503"] = true, ["webhook 503"] = true })
            assert.is_nil(bad, "unexpected failures: " .. tostring(bad))
            assert.is_true((failures(r)["webhook 503"] or 0) > 0, "the spool's disk never filled")
            local name = "spool disk full (128 KiB tmpfs), tenant servers down 12 s"
            settle_and_record(name, { gen }, { 3, 15 }, gen.events.healed)
            assert_recovered(name, rec)
            assert.is_true(srv:stop())
        end)
        if srv and srv:alive() then srv:stop() end
        for _, cl in ipairs { bench.a, bench.b } do cl:start() end
        os.execute("umount " .. server.quote(spool))
        assert(ok, err)
    end)
end)
