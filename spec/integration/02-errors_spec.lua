-- Failing handlers: every kind of failure becomes a generic 500 with the
-- request id, the details go to the log under that id, and the worker keeps
-- serving.
local suite = require "support.suite"
local http = require "support.http"

local GENERIC_LEAKS <const> = { "%.lua", "traceback", "boom", "undeclared", "yield", "routes/", "stack" }

describe("failing handlers", function()
    local srv = suite.server { config = { workers = 1 } }

    local function assert_internal_error(res, id)
        assert.equal(500, res.status)
        assert.equal(id, res.headers["x-request-id"])
        assert.matches("^application/json", res.headers["content-type"])
        assert.is_table(res.json, "500 body is not JSON: " .. tostring(res.body))
        assert.equal("internal_error", res.json.error.code)
        assert.equal(id, res.json.error.requestId)
        for _, leak in ipairs(GENERIC_LEAKS) do
            assert.not_matches(leak, res.json.error.message)
        end
        local keys = {}
        for k in pairs(res.json.error) do keys[#keys + 1] = k end
        table.sort(keys)
        assert.same({ "code", "message", "requestId" }, keys)
    end

    local function assert_still_serving(pids_before)
        assert.same(pids_before, srv:worker_pids())
        local health = assert(http.request { port = srv.port, path = "/health" })
        assert.equal(200, health.status)
        assert.same({ status = "ok" }, health.json)
        local echo = assert(http.request {
            port = srv.port, method = "POST", path = "/test/echo",
            headers = { ["Content-Type"] = "application/json" }, body = '{"still":"here"}',
        })
        assert.equal(200, echo.status)
        assert.same({ still = "here" }, echo.json)
    end

    local cases = {
        { path = "/test/error", id = "errlua", what = "a Lua error",
          log = { "boom from the test route", "stack traceback", "routes/test%.lua:%d+" } },
        { path = "/test/nonstring", id = "errbody", what = "a non-string body" },
        { path = "/test/yield", id = "erryield", what = "coroutine.yield in the handler" },
        { path = "/test/global", id = "errglobal", what = "an undeclared global",
          log = { "undeclared_global_from_a_route", "routes/test%.lua:%d+" } },
    }

    for _, case in ipairs(cases) do
        it("answers " .. case.what .. " with a generic 500, logs it under the request id, keeps serving", function()
            local pids = srv:worker_pids()
            assert.equal(1, #pids)
            local res = assert(http.request {
                port = srv.port, path = case.path, headers = { ["X-Request-Id"] = case.id },
            })
            assert_internal_error(res, case.id)

            local entry = srv:wait_entry { level = "error", requestId = case.id }
            assert.is_table(entry, "no error line logged for " .. case.id)
            assert.equal("handler failed", entry.msg)
            for _, pattern in ipairs(case.log or {}) do
                assert.matches(pattern, tostring(entry.error))
            end

            assert_still_serving(pids)
            assert.same({}, srv:unexpected_errors { '"requestId":"' .. case.id .. '"' })
        end)

        it("logs the access line of " .. case.what .. " with its route pattern and status 500", function()
            local id = case.id .. "2"
            local res = assert(http.request { port = srv.port, path = case.path, headers = { ["X-Request-Id"] = id } })
            assert.equal(500, res.status)
            local access = srv:wait_entry { msg = "request", requestId = id }
            assert.is_table(access, "no access line for " .. id)
            assert.equal("GET", access.method)
            assert.equal(500, access.status)
            assert.equal(case.path, access.route)
            assert.is_number(access.durationMs)
            assert.same({}, srv:unexpected_errors { '"requestId":"' .. id .. '"' })
        end)
    end

    it("serves the next request on the same connection after a failed handler", function()
        local conn = assert(http.connect(srv.port))
        local failed = assert(conn:request { path = "/test/error", headers = { ["X-Request-Id"] = "errconn" } })
        assert_internal_error(failed, "errconn")
        local after = assert(conn:request { path = "/health" })
        assert.equal(200, after.status)
        assert.same({ status = "ok" }, after.json)
        conn:close()
        assert.is_table(srv:wait_entry { msg = "handler failed", requestId = "errconn" })
        assert.same({}, srv:unexpected_errors { '"requestId":"errconn"' })
    end)

    it("counts the failures as status 500 of their routes in /metrics", function()
        local key = 'steeple_http_requests_total{route="/test/error",status="500"}'
        local before = srv:metric(key)
        for i = 1, 3 do
            local res = assert(http.request {
                port = srv.port, path = "/test/error", headers = { ["X-Request-Id"] = "errm" .. i },
            })
            assert.equal(500, res.status)
        end
        srv:wait_entry { msg = "request", requestId = "errm3" }
        assert.equal(3, srv:metric(key) - before)
        assert.same({}, srv:unexpected_errors { '"requestId":"errm%d"' })
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
