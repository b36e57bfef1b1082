-- Requests run in coroutines: a sleeping or hashing request suspends only
-- itself, and one worker serves many at once.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"

describe("coroutines", function()
    local srv = suite.server {
        -- 36 argon2id hashes on 2 threads take seconds on a busy machine
        config = { workers = 1, threads = 2, limits = { read_timeout_s = 2, request_timeout_s = 30 } },
    }

    it("serves 10 concurrent sleeps on one worker at once", function()
        assert.equal(1, #srv:worker_pids())
        local specs = {}
        for i = 1, 10 do
            specs[i] = { port = srv.port, path = "/test/sleep?ms=2000", headers = { ["X-Request-Id"] = "conc" .. i } }
        end
        local results = http.concurrent(specs, 60)
        for i, res in ipairs(results) do
            assert.is_nil(res.error)
            assert.equal(200, res.status)
            assert.same({ slept = 2000, worker = 0, requestId = "conc" .. i }, res.json)
            assert.is_true(res.elapsed >= 1.95, "request " .. i .. " returned after only " .. res.elapsed .. " s")
        end
        -- at once: the worker's log shows every sleep begun before any was
        -- answered (the access lines are written a moment after the answers)
        local started, answered, order_ok
        assert.truthy(server.wait_until(function()
            started, answered, order_ok = 0, 0, true
            for _, line in ipairs((srv:log_lines())) do
                local e = line.entry
                if e and type(e.requestId) == "string" and e.requestId:match("^conc%d+$") then
                    if e.msg == "sleep started" then
                        order_ok = order_ok and answered == 0
                        started = started + 1
                    elseif e.msg == "request" then
                        answered = answered + 1
                    end
                end
            end
            return answered == 10
        end, 10), "the access lines never came")
        assert.equal(10, started)
        assert.is_true(order_ok, "a sleep began after another was answered")
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers /health while another request sleeps", function()
        local results = http.run {
            function()
                local res = assert(http.request {
                    port = srv.port, path = "/test/sleep?ms=3000", headers = { ["X-Request-Id"] = "sleeper" },
                })
                res.finished_at = http.now()
                return res
            end,
            function()
                local deadline = http.now() + 5
                while #srv:entries { msg = "sleep started", requestId = "sleeper" } == 0 do
                    assert(http.now() < deadline, "the sleeping request never started")
                    http.sleep(0.02)
                end
                local res = assert(http.request { port = srv.port, path = "/health" })
                res.finished_at = http.now()
                return res
            end,
        }
        assert.is_true(results[1].ok, results[1].err)
        assert.is_true(results[2].ok, results[2].err)
        local sleeper, health = results[1].value, results[2].value
        assert.equal(200, sleeper.status)
        assert.equal(3000, sleeper.json.slept)
        assert.equal(200, health.status)
        assert.is_true(health.finished_at < sleeper.finished_at)
        assert.same({}, srv:unexpected_errors())
    end)

    it("hashes and verifies passwords with argon2id on the thread pool", function()
        local res = assert(http.request { port = srv.port, path = "/test/hash?pw=correct%20horse" })
        assert.equal(200, res.status)
        assert.same({ ok = true, wrong = false, prefix = "$argon2id$" }, res.json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers /health while hashes run", function()
        local funcs = {}
        for i = 1, 12 do
            funcs[i] = function()
                local res = assert(http.request {
                    port = srv.port, path = "/test/hash?pw=pw" .. i, headers = { ["X-Request-Id"] = "hash" .. i },
                    timeout = 60,
                })
                res.finished_at = http.now()
                return res
            end
        end
        -- Runs after every hash request has been sent.
        funcs[#funcs + 1] = function()
            local res = assert(http.request { port = srv.port, path = "/health" })
            res.finished_at = http.now()
            return res
        end
        local results = http.run(funcs, 60)
        local last_hash = 0
        for i = 1, 12 do
            assert.is_true(results[i].ok, results[i].err)
            local res = results[i].value
            assert.equal(200, res.status)
            assert.same({ ok = true, wrong = false, prefix = "$argon2id$" }, res.json)
            last_hash = math.max(last_hash, res.finished_at)
        end
        local health = results[13]
        assert.is_true(health.ok, health.err)
        assert.equal(200, health.value.status)
        assert.is_true(health.value.finished_at < last_hash, "/health waited for all the hashes")
        assert.same({}, srv:unexpected_errors())
    end)

    it("tells each request its own id through steeple.request_id()", function()
        local specs = {}
        for i = 1, 5 do
            specs[i] = {
                port = srv.port, path = "/test/sleep?ms=" .. (60 - i * 10), headers = { ["X-Request-Id"] = "own" .. i },
            }
        end
        for i, res in ipairs(http.concurrent(specs)) do
            assert.equal(200, res.status)
            assert.equal("own" .. i, res.json.requestId)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("delivers the answer of a handler busy on the CPU for longer than read_timeout_s", function()
        local res, err = http.request {
            port = srv.port, path = "/test/spin?ms=2500", headers = { ["X-Request-Id"] = "spin" }, timeout = 15,
        }
        assert.is_table(res, "no answer: " .. tostring(err))
        assert.equal(200, res.status)
        assert.same({ spun = 2500 }, res.json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
