-- The process model: worker restarts, graceful shutdown, start-up errors and
-- environment overrides.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local socket = require "socket"

local function health_ok(port)
    local res, err = http.request { port = port, path = "/health" }
    if not res then return false, err end
    return res.status == 200 and res.json and res.json.status == "ok", res.status
end

-- Polls fn() every 50 ms for at most timeout seconds; returns its last value.
local function poll(timeout, fn)
    local deadline = http.now() + timeout
    local v = fn()
    while not v and http.now() < deadline do
        http.sleep(0.05)
        v = fn()
    end
    return v
end

describe("process", function()
    teardown(function()
        server.cleanup()
    end)

    describe("with two workers", function()
        -- each case marks the log where its own lines begin
        local srv = suite.server({ config = { workers = 2, limits = { request_timeout_s = 3 } } }, { mark = false })

        it("logs the start-up line with the port, worker count and master pid", function()
            srv:mark()
            local line = srv:wait_entry {
                msg = string.format("steeple serving on 127.0.0.1:%d with 2 workers (pid %d)", srv.port, srv.pid),
            }
            assert.is_table(line)
            for w = 0, 1 do
                assert.is_table(srv:wait_entry {
                    msg = string.format("worker %d serving on 127.0.0.1:%d", w, srv.port), worker = w,
                })
            end
            assert.equal(2, #srv:worker_pids())
            assert.same({}, srv:unexpected_errors())
        end)

        it("restarts a worker killed with SIGKILL while the other keeps serving", function()
            srv:mark()
            local before = srv:worker_pids()
            assert.equal(2, #before)
            local victim = before[1]
            assert.is_true(srv:signal("KILL", victim))
            local pattern = "worker %d+ %(pid " .. victim .. "%) killed by signal 9; restarting in 0%.1 s"
            assert.is_string(srv:wait_log(pattern, 5), "the master did not report the killed worker")

            local failures = {}
            for i = 1, 40 do
                local ok, why = health_ok(srv.port)
                if not ok then failures[#failures + 1] = i .. ": " .. tostring(why) end
            end
            assert.same({}, failures)

            local after = poll(5, function()
                local pids = srv:worker_pids()
                if #pids == 2 and pids[1] ~= victim and pids[2] ~= victim then return pids end
                return nil
            end)
            assert.is_table(after, "the killed worker was not replaced")
            local survivor = before[2]
            assert.is_truthy(after[1] == survivor or after[2] == survivor)
            for i = 1, 20 do
                local ok, why = health_ok(srv.port)
                if not ok then failures[#failures + 1] = "after restart " .. i .. ": " .. tostring(why) end
            end
            assert.same({}, failures)
            assert.same({}, srv:unexpected_errors { "killed by signal 9" })
        end)

        it("ends and replaces a worker whose handler holds the loop past the deadline beyond a hook's reach",
            function()
                -- the server here runs with request_timeout_s = 3; the watchdog
                -- ends a worker still busy 5 s past the deadline
                srv:mark()
                local before = srv:worker_pids()
                local res, err = http.request {
                    port = srv.port, path = "/test/nestedloop", headers = { ["X-Request-Id"] = "stuck" }, timeout = 15,
                }
                assert.is_nil(res, "a stuck handler got an answer")
                assert.is_truthy(err)
                assert.is_string(srv:wait_log("held the event loop", 5))
                assert.is_string(srv:wait_log("killed by signal 9; restarting", 5))
                local after = poll(5, function()
                    local pids = srv:worker_pids()
                    if #pids == 2 then return pids end
                    return nil
                end)
                assert.is_table(after, "the ended worker was not replaced")
                assert.are_not.same(before, after)
                for _ = 1, 10 do assert.is_true((health_ok(srv.port))) end
                assert.same({}, srv:unexpected_errors { "held the event loop", "killed by signal 9" })
            end)

        it("finishes a request in flight on SIGTERM and exits with status 0", function()
            srv:mark()
            local results = http.run {
                function()
                    return { http.request {
                        port = srv.port, path = "/test/sleep?ms=1000", headers = { ["X-Request-Id"] = "inflight" },
                    } }
                end,
                function()
                    local deadline = http.now() + 5
                    while #srv:entries { msg = "sleep started", requestId = "inflight" } == 0 do
                        assert(http.now() < deadline, "the sleeping request never started")
                        http.sleep(0.02)
                    end
                    return srv:signal("TERM")
                end,
            }
            assert.is_true(results[1].ok, results[1].err)
            assert.is_true(results[2].ok, results[2].err)
            assert.is_true(results[2].value)
            local res, err = results[1].value[1], results[1].value[2]
            local exit_status = srv:wait_exit(10)
            -- Both at once, so that a failure shows the answer and the exit status.
            assert.same({ answer = 200, exit_status = 0 },
                { answer = res and res.status or ("no answer: " .. tostring(err)), exit_status = exit_status })
            assert.same({ slept = 1000, worker = res.json.worker, requestId = "inflight" }, res.json)
            assert.same({}, srv:worker_pids())
            local ok = health_ok(srv.port)
            assert.is_false(ok)
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    describe("start-up", function()
        local function serve(config, env)
            local scripts = server.scripts_dir()
            local path = server.write_config(config)
            local merged = { PORT = tostring(server.free_port()) }
            for k, v in pairs(env or {}) do merged[k] = v end
            return server.run_binary({ "serve", "--config", path, "--scripts", scripts }, merged, 10)
        end

        local cases = {
            { what = "an unknown key", config = { workers = 1, limits = { bodybytes = 1 } },
              expect = "config: unknown key 'limits.bodybytes'" },
            { what = "an unknown top-level key", config = { workers = 1, colour = "red" },
              expect = "config: unknown key 'colour'" },
            { what = "a value of the wrong type", config = { workers = "two" }, expect = "workers" },
            { what = "a section that is not a table", config = { workers = 1, limits = 5 }, expect = "limits" },
            { what = "a value out of range", config = { workers = 1, limits = { read_timeout_s = 0 } },
              expect = "limits.read_timeout_s" },
            { what = "an environment override of the wrong type", config = { workers = 1 },
              env = { STEEPLE_WORKERS = "many" }, expect = "STEEPLE_WORKERS" },
        }
        for _, case in ipairs(cases) do
            it("exits with status 1 on " .. case.what .. ", naming it on stderr", function()
                local status, stderr = serve(case.config, case.env)
                assert.equal(1, status)
                assert.is_truthy(stderr:find(case.expect, 1, true), "stderr does not name it: " .. stderr)
            end)
        end

        local unusable_spool = {
            { what = "a regular file", path = function(dir) return dir .. "/file" end,
              expect = "/file is not a directory" },
            { what = "a path under a regular file", path = function(dir) return dir .. "/file/spool" end,
              expect = "cannot create %s: Not a directory" },
        }
        for _, case in ipairs(unusable_spool) do
            it("exits with status 1 and a clear message when the spool directory is " .. case.what, function()
                local dir = server.tmpdir()
                server.write_file(dir .. "/file", "not a directory\n")
                local path = case.path(dir)
                local status, stderr = serve({ workers = 2 }, { STEEPLE_SPOOL_DIR = path })
                assert.equal(1, status)
                local expect = case.expect:find("%s", 1, true) and case.expect:format(path) or case.expect
                assert.is_truthy(stderr:find("spool.dir: ", 1, true), "stderr does not name the key: " .. stderr)
                assert.is_truthy(stderr:find(expect, 1, true), "stderr does not say why: " .. stderr)
                assert.is_falsy(stderr:find("restarting", 1, true), "a worker was started again: " .. stderr)
            end)
        end

        it("exits with status 1 and a clear message when the port is in use", function()
            local holder = assert(socket.bind("127.0.0.1", 0))
            local _, port = holder:getsockname()
            local status, stderr = serve({ workers = 1 }, { PORT = tostring(port) })
            holder:close()
            assert.equal(1, status)
            assert.is_truthy(stderr:find("127.0.0.1:" .. port, 1, true), "stderr does not name the address: " .. stderr)
            assert.is_truthy(stderr:lower():find("in use", 1, true), "stderr does not say why: " .. stderr)
        end)
    end)

    describe("the spool directory", function()
        it("is made with its missing parents, mode 0700, on a fresh checkout", function()
            local dir = server.tmpdir() .. "/var/nested/spool"
            local srv = server.start { env = { STEEPLE_SPOOL_DIR = dir } }
            assert.is_true((health_ok(srv.port)))
            assert.equal("700 directory", server.capture("stat -c '%a %F' " .. server.quote(dir)):gsub("%s+$", ""))
            srv:assert_stops_cleanly()
        end)

        it("stops at once on SIGTERM after a client went away while its answer was being written", function()
            local srv = server.start { config = { workers = 1, shutdown_timeout_s = 300 } }
            srv:mark()
            -- 64 MiB: more than the sockets' buffers hold, so the answer is
            -- still being written when the client resets the connection
            local sock = assert(http.raw(srv.port))
            assert(sock:send("GET /test/big?mb=64 HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            assert.is_table(srv:wait_entry { msg = "request", route = "/test/big" }, "the answer never started")
            assert.is_string((sock:receive(1024)), "no byte of the answer came")
            sock:setoption("linger", { on = true, timeout = 0 }) -- close with a reset
            sock:close()
            assert.is_true(srv:signal("TERM"))
            -- the worker ends once nothing runs, long before shutdown_timeout_s
            local status = srv:wait_exit(20 * server.SLOW)
            assert.equal(0, status, "still running 20 s after SIGTERM:\n" .. srv:log_text())
            assert.is_nil(srv:log_contains("shutdown timeout"))
            assert.same({}, srv:unexpected_errors())
        end)

        it("stops the server, once, when a restarted worker cannot use it", function()
            local dir = server.tmpdir() .. "/spool"
            local srv = server.start { config = { workers = 2 }, env = { STEEPLE_SPOOL_DIR = dir } }
            srv:mark()
            -- a file takes the directory's place while the server runs (the
            -- workers keep the directory they opened); a worker then dies
            assert.equal("", server.capture("mv " .. server.quote(dir) .. " " .. server.quote(dir .. ".old")
                .. " && touch " .. server.quote(dir)))
            local pids = poll(5, function()
                local p = srv:worker_pids()
                return #p == 2 and p or nil
            end)
            assert.is_table(pids, "two workers never ran:\n" .. srv:log_text())
            assert.is_true(srv:signal("KILL", pids[1]), "cannot kill worker " .. pids[1] .. ":\n" .. srv:log_text())
            local status = srv:wait_exit(20 * server.SLOW)
            assert.equal(1, status)
            assert.is_string(srv:log_contains("worker %d could not start: " .. dir:gsub("%p", "%%%0")
                .. " is not a directory"))
            assert.is_string(srv:log_contains("cannot start with this configuration"))
            assert.equal(1, srv:log_count("restarting in"))
            assert.same({}, srv:unexpected_errors { "could not start", "cannot start with this configuration" })
        end)
    end)

    describe("environment overrides", function()
        local config_port
        local srv = suite.server(function()
            config_port = server.free_port()
            return { config = { port = config_port, workers = 1 }, env = { STEEPLE_WORKERS = "2" } }
        end, { mark = false })

        it("listens on PORT rather than the config file's port", function()
            assert.not_equal(config_port, srv.port)
            assert.is_true((health_ok(srv.port)))
            local res, err = http.request { port = config_port, path = "/health", timeout = 2 }
            assert.is_nil(res)
            assert.matches("refused", err)
            assert.is_table(srv:wait_entry {
                msg = string.format("steeple serving on 127.0.0.1:%d with 2 workers (pid %d)", srv.port, srv.pid),
            })
        end)

        it("runs STEEPLE_WORKERS workers rather than the config file's count", function()
            local pids = poll(5, function()
                local p = srv:worker_pids()
                return #p == 2 and p or nil
            end)
            assert.is_table(pids)
            assert.equal(2, #pids)
        end)

        it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
            srv:assert_stops_cleanly()
        end)
    end)
end)
