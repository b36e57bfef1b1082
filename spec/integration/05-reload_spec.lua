-- Reloading the scripts: SIGHUP, failed reloads that keep the running
-- scripts, reloads under load, and --watch.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local cjson = require "cjson"

local WORKERS <const> = 2
local RELOADED <const> = "scripts reloaded %(generation %d+%)"
local FAILED_MSG <const> = "script reload failed; keeping the running scripts"
local OK_KEY <const> = 'steeple_script_reloads_total{result="ok"}'
local ERROR_KEY <const> = 'steeple_script_reloads_total{result="error"}'

-- Test routes file of a scripts directory.
local function routes_file(scripts)
    return scripts .. "/routes/test.lua"
end

local function set_version(scripts, version)
    local path = routes_file(scripts)
    local text = assert(server.read_file(path))
    local new, n = text:gsub('local VERSION = "[^"]*"', 'local VERSION = "' .. version .. '"')
    assert(n == 1, "VERSION line not found in " .. path)
    server.write_file(path, new)
end

-- Inserts line as line number `at` of the test routes file.
local function insert_line(scripts, at, line)
    local path = routes_file(scripts)
    local lines = {}
    for l in (assert(server.read_file(path)) .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    table.insert(lines, at, line)
    server.write_file(path, table.concat(lines, "\n"))
end

-- Polls srv's /metrics (at most 5 s) until key reaches at least value; returns the last value.
local function metric_reaches(srv, key, value)
    local deadline = http.now() + 5
    local v = srv:metric(key)
    while v < value and http.now() < deadline do
        http.sleep(0.05)
        v = srv:metric(key)
    end
    return v
end

describe("script reload", function()
    local srv, original

    -- The versions answered by n requests on new connections.
    local function versions(n)
        local seen = {}
        for _ = 1, n do
            local res = assert(http.request { port = srv.port, path = "/test/version" })
            assert.equal(200, res.status)
            seen[res.json.version] = (seen[res.json.version] or 0) + 1
        end
        return seen
    end

    -- Sends SIGHUP and waits until every worker has logged a reload (ok or failed).
    -- Returns the new log entries of the reload.
    local function reload()
        local done_before = srv:log_count(RELOADED) + #srv:entries { msg = FAILED_MSG }
        assert.is_true(srv:sighup())
        local deadline = http.now() + 10
        while srv:log_count(RELOADED) + #srv:entries { msg = FAILED_MSG } < done_before + WORKERS do
            assert(http.now() < deadline, "the workers did not finish reloading")
            http.sleep(0.02)
        end
    end

    srv = suite.server { config = { workers = WORKERS } }

    setup(function()
        original = assert(server.read_file(routes_file(srv.scripts)))
    end)

    it("serves the new scripts after SIGHUP", function()
        assert.same({ v1 = 20 }, versions(20))
        local ok_before = srv:metric(OK_KEY)
        set_version(srv.scripts, "v2")
        reload()
        assert.same({ v2 = 20 }, versions(20))
        -- Every worker reloaded once.
        local per_worker = {}
        for _, line in ipairs(srv:log_lines()) do
            if line.entry and tostring(line.entry.msg):match("^" .. RELOADED .. "$") then
                per_worker[line.entry.worker] = (per_worker[line.entry.worker] or 0) + 1
            end
        end
        assert.same({ [0] = 1, [1] = 1 }, per_worker)
        assert.equal(ok_before + WORKERS, metric_reaches(srv, OK_KEY, ok_before + WORKERS))
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps the running scripts when a route file has a syntax error, and logs file and line", function()
        local ok_before, err_before = srv:metric(OK_KEY), srv:metric(ERROR_KEY)
        insert_line(srv.scripts, 12, "local broken = = 1")
        reload()
        local failures = srv:entries { msg = FAILED_MSG }
        assert.equal(WORKERS, #failures)
        local workers_seen = {}
        for _, e in ipairs(failures) do
            assert.equal("error", e.level)
            assert.matches("routes/test%.lua:12:", tostring(e.error))
            workers_seen[e.worker] = true
        end
        for w = 0, WORKERS - 1 do assert.is_true(workers_seen[w]) end
        assert.same({ v2 = 20 }, versions(20))
        assert.equal(err_before + WORKERS, metric_reaches(srv, ERROR_KEY, err_before + WORKERS))
        assert.equal(ok_before, srv:metric(OK_KEY))
        assert.same({}, srv:unexpected_errors { FAILED_MSG })
    end)

    it("reloads again once the file is fixed", function()
        local ok_before = srv:metric(OK_KEY)
        server.write_file(routes_file(srv.scripts), original)
        set_version(srv.scripts, "v3")
        reload()
        assert.same({ v3 = 20 }, versions(20))
        assert.equal(ok_before + WORKERS, metric_reaches(srv, OK_KEY, ok_before + WORKERS))
        assert.same({}, srv:unexpected_errors())
    end)

    it("tells a request begun before a reload that its scripts are no longer current", function()
        local out = server.tmpdir() .. "/slept.json"
        os.execute(string.format("curl -s 'http://127.0.0.1:%d/test/current?ms=1500' > %s &", srv.port, out))
        assert.truthy(srv:wait_log("sleep started", 5), "the sleeping request did not start")
        reload()
        local body
        assert.truthy(server.wait_until(function()
            body = server.read_file(out)
            return body ~= nil and body ~= ""
        end, 10), "the sleeping request did not answer")
        assert.same({ before = true, after = false }, cjson.decode(body))
        local res = assert(http.request { port = srv.port, path = "/test/current?ms=1" })
        assert.same({ before = true, after = true }, res.json)
        assert.same({}, srv:unexpected_errors { FAILED_MSG })
    end)

    it("refuses scripts that call steeple.sleep while loading", function()
        local failed_before = #srv:entries { msg = FAILED_MSG }
        server.write_file(routes_file(srv.scripts), original)
        set_version(srv.scripts, "v4")
        insert_line(srv.scripts, 9, "steeple.sleep(1)")
        reload()
        local failures = srv:entries { msg = FAILED_MSG }
        assert.equal(failed_before + WORKERS, #failures)
        for i = failed_before + 1, #failures do
            assert.matches("API disabled in this context", tostring(failures[i].error))
            assert.matches("routes/test%.lua:9:", tostring(failures[i].error))
        end
        assert.same({ v3 = 20 }, versions(20))
        server.write_file(routes_file(srv.scripts), original)
        set_version(srv.scripts, "v5")
        reload()
        assert.same({ v5 = 20 }, versions(20))
        assert.same({}, srv:unexpected_errors { FAILED_MSG })
    end)

    it("fails no request during 50 SIGHUPs sent every 20 ms under load", function()
        local ok_before, err_before = srv:metric(OK_KEY), srv:metric(ERROR_KEY)
        local done = false
        local failures, counts = {}, { total = 0, sleep = 0 }

        local function record(path, res, err, check)
            counts.total = counts.total + 1
            if not res then
                failures[#failures + 1] = path .. ": " .. tostring(err)
            elseif res.status ~= 200 or not check(res) then
                failures[#failures + 1] = path .. ": " .. res.status .. " " .. tostring(res.body)
            end
        end

        local function sleeper()
            while not done do
                local res, err = http.request { port = srv.port, path = "/test/sleep?ms=200" }
                record("/test/sleep", res, err, function(r) return r.json and r.json.slept == 200 end)
                counts.sleep = counts.sleep + 1
            end
        end

        -- Requests on new connections, or all on one keep-alive connection.
        local function mixed(keep_alive)
            return function()
                local conn = keep_alive and assert(http.connect(srv.port))
                local function request(spec)
                    if conn then return conn:request(spec) end
                    spec.port = srv.port
                    return http.request(spec)
                end
                local i = 0
                while not done do
                    i = i + 1
                    if i % 3 == 0 then
                        local res, err = request { path = "/health" }
                        record("/health", res, err, function(r) return r.json and r.json.status == "ok" end)
                    elseif i % 3 == 1 then
                        local res, err = request { path = "/test/version" }
                        record("/test/version", res, err, function(r) return r.json and r.json.version == "v5" end)
                    else
                        local res, err = request {
                            method = "POST", path = "/test/echo",
                            headers = { ["Content-Type"] = "application/json" }, body = '{"n":' .. i .. "}",
                        }
                        record("/test/echo", res, err, function(r) return r.json and r.json.n == i end)
                    end
                    http.sleep(0.002) -- paces the load; the machine has few cores
                end
                if conn then conn:close() end
            end
        end

        -- A SIGHUP every 20 ms at most, and not before a request has finished
        -- since the last one: on a slow build (ASan, valgrind) reloads would
        -- otherwise crowd out the load they are meant to run under.
        local hups = 0
        local function hupper()
            local deadline = http.now() + 40 * server.SLOW
            for _ = 1, 50 do
                local seen = counts.total
                if srv:sighup() then hups = hups + 1 end
                repeat http.sleep(0.02) until counts.total > seen or http.now() > deadline
            end
            http.sleep(0.3) -- lets the sleeps begun during the last reloads finish
            done = true
        end

        local results = http.run({ sleeper, sleeper, sleeper, mixed(false), mixed(false), mixed(true), hupper }, 60)
        for _, r in ipairs(results) do assert.is_true(r.ok, r.err) end
        assert.equal(50, hups)
        assert.same({}, failures)
        assert.is_true(counts.sleep >= 6, "only " .. counts.sleep .. " sleep requests ran")
        assert.is_true(counts.total >= 50, "only " .. counts.total .. " requests ran")

        -- Signals may coalesce, but every worker reloaded at least once and none failed.
        assert.is_true(metric_reaches(srv, OK_KEY, ok_before + WORKERS) >= ok_before + WORKERS)
        assert.equal(err_before, srv:metric(ERROR_KEY))
        assert.same({ v5 = 10 }, versions(10))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

describe("--watch", function()
    local srv = suite.server({ config = { workers = 1 }, watch = true }, { mark = false })

    it("reloads when a route file changes, without a signal", function()
        srv:mark()
        local res = assert(http.request { port = srv.port, path = "/test/version" })
        assert.equal("v1", res.json.version)
        set_version(srv.scripts, "w2")
        local deadline = http.now() + 5
        local version = "v1"
        while version ~= "w2" and http.now() < deadline do
            http.sleep(0.05)
            version = assert(http.request { port = srv.port, path = "/test/version" }).json.version
        end
        assert.equal("w2", version)
        assert.is_string(srv:wait_log(RELOADED))
        assert.equal(1, metric_reaches(srv, OK_KEY, 1))
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps serving the running scripts when a watched edit breaks a file", function()
        srv:mark()
        local err_before = srv:metric(ERROR_KEY)
        insert_line(srv.scripts, 12, "local broken = = 1")
        local entry = srv:wait_entry { msg = FAILED_MSG }
        assert.is_table(entry, "no failed reload was logged")
        assert.matches("routes/test%.lua:12:", tostring(entry.error))
        assert.equal(err_before + 1, metric_reaches(srv, ERROR_KEY, err_before + 1))
        local res = assert(http.request { port = srv.port, path = "/test/version" })
        assert.equal(200, res.status)
        assert.equal("w2", res.json.version)
        assert.same({}, srv:unexpected_errors { FAILED_MSG })
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:mark()
        srv:assert_stops_cleanly()
    end)
end)
