-- Limits: body and header sizes, malformed and abandoned requests, slow
-- clients, hostile JSON and the per-request deadline.
local server = require "support.server"
local http = require "support.http"

local BODY_LIMIT <const> = 65536
local READ_TIMEOUT <const> = 2
local REQUEST_TIMEOUT <const> = 2
-- How long past read_timeout_s a close is waited for: the sweep acts within
-- about a second, and a busy machine may take a good while longer.
local CLOSE_MARGIN <const> = 15

describe("limits", function()
    local srv

    setup(function()
        srv = server.start {
            config = {
                workers = 1,
                limits = {
                    body_bytes = BODY_LIMIT,
                    header_bytes = 8192,
                    read_timeout_s = READ_TIMEOUT,
                    request_timeout_s = REQUEST_TIMEOUT,
                },
            },
        }
    end)

    teardown(function()
        if srv then srv:stop(5) end
        server.cleanup()
    end)

    before_each(function()
        srv:mark()
    end)

    local function assert_serving()
        local res = assert(http.request { port = srv.port, path = "/health" })
        assert.equal(200, res.status)
        assert.same({ status = "ok" }, res.json)
    end

    local function post_json(body, id)
        return assert(http.request {
            port = srv.port, method = "POST", path = "/test/echo", body = body,
            headers = { ["Content-Type"] = "application/json", ["X-Request-Id"] = id },
        })
    end

    -- A JSON object body of exactly n bytes: {"a":"xxx..."}.
    local function body_of(n)
        return '{"a":"' .. string.rep("x", n - 8) .. '"}'
    end

    -- Sends text on a raw socket (ignoring a peer that closes early) and reads
    -- the answer: returns the response, or nil and why there is none.
    local function send_raw(text, timeout)
        local sock = assert(http.raw(srv.port))
        sock:send(text)
        local res, err = http.read_response(sock, timeout or 5)
        sock:close()
        return res, err
    end

    local function is_closed(err)
        return err == "closed" or tostring(err):find("reset", 1, true) ~= nil
    end

    it("accepts a body of exactly limits.body_bytes", function()
        local body = body_of(BODY_LIMIT)
        assert.equal(BODY_LIMIT, #body)
        local res = post_json(body, "bodyfits")
        assert.equal(200, res.status)
        assert.equal(BODY_LIMIT - 8, #res.json.a)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a body one byte over limits.body_bytes with 413 and keeps serving", function()
        local body = body_of(BODY_LIMIT + 1)
        local sock = assert(http.raw(srv.port))
        assert(sock:send("POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            .. "Content-Length: " .. #body .. "\r\n\r\n"))
        -- The answer may come from the headers alone; send the body only if it does not.
        local res, err = http.read_response(sock, 1)
        if not res and err == "timeout" then
            sock:settimeout(5)
            sock:send(body)
            res, err = http.read_response(sock, 5)
        end
        sock:close()
        assert.is_table(res, "no response: " .. tostring(err))
        assert.equal(413, res.status)
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("accepts a 4 KB header under limits.header_bytes", function()
        local res = assert(http.request {
            port = srv.port, path = "/health", headers = { ["X-Padding"] = string.rep("p", 4096) },
        })
        assert.equal(200, res.status)
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses a 100 KB header block with a 4xx or by closing, and keeps serving", function()
        local res, err = send_raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("a", 100 * 1024)
            .. "\r\n\r\n")
        if res then
            assert.is_truthy(res.status == 400 or res.status == 413 or res.status == 431,
                "unexpected status " .. res.status)
        else
            assert.is_true(is_closed(err), "neither an answer nor a close: " .. tostring(err))
        end
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    -- An unrecognised method token is 501 Not Implemented (RFC 9110 9.1);
    -- everything else malformed is 400.
    local malformed = {
        { name = "a request line without spaces", text = "GARBAGE\r\n\r\n", status = 400 },
        { name = "a request line without a target", text = "GET\r\n\r\n", status = 400 },
        { name = "control bytes in the method", text = "\1\2\3\4 / HTTP/1.1\r\n\r\n", status = 501 },
    }
    for _, case in ipairs(malformed) do
        it("refuses " .. case.name .. " with " .. case.status .. " or by closing, and keeps serving", function()
            local res, err = send_raw(case.text)
            if res then
                assert.equal(case.status, res.status)
            else
                assert.is_true(is_closed(err), "neither an answer nor a close: " .. tostring(err))
            end
            assert_serving()
            assert.same({}, srv:unexpected_errors())
        end)
    end

    it("keeps serving after clients close half-way through a request", function()
        local partials = {
            "GET /hea",
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Cut: abc",
            "POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                .. "Content-Length: 100\r\n\r\n{\"a\":",
        }
        for _, text in ipairs(partials) do
            local sock = assert(http.raw(srv.port))
            assert(sock:send(text))
            sock:close()
            assert_serving()
        end
        local echo = post_json('{"after":true}', "halfafter")
        assert.equal(200, echo.status)
        assert.same({ after = true }, echo.json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("closes a connection that sends nothing, not before read_timeout_s", function()
        local sock = assert(http.raw(srv.port))
        local started = http.now()
        local outcome = http.wait_closed(sock, READ_TIMEOUT + CLOSE_MARGIN)
        local elapsed = http.now() - started
        sock:close()
        assert.equal("closed", outcome)
        assert.is_true(elapsed >= READ_TIMEOUT - 0.5, "closed too early: " .. elapsed .. " s")
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("closes a connection trickling a request at 1 byte/s, not before read_timeout_s", function()
        local text = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " .. string.rep("s", 100)
        local sock = assert(http.raw(srv.port))
        local started = http.now()
        local outcome, sent = "timeout", 0
        while http.now() - started < READ_TIMEOUT + CLOSE_MARGIN do
            sent = sent + 1
            local ok = sock:send(text:sub(sent, sent))
            if not ok then
                outcome = "closed"
                break
            end
            outcome = http.wait_closed(sock, 1)
            if outcome ~= "timeout" then break end
        end
        local elapsed = http.now() - started
        sock:close()
        assert.equal("closed", outcome)
        assert.is_true(sent >= 2, "closed before the trickle started")
        assert.is_true(elapsed >= READ_TIMEOUT - 0.5, "closed too early: " .. elapsed .. " s")
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    describe("JSON bodies", function()
        local deep = '{"a":' .. string.rep("[", 10000) .. string.rep("]", 10000) .. "}"
        local bad = {
            { name = "invalid UTF-8", body = '{"name":"\xff\xfe"}' },
            { name = "a truncated UTF-8 sequence", body = '{"name":"caf\xc3"}' },
            { name = "10,000 levels of nesting", body = deep },
            { name = "duplicate keys", body = '{"a":1,"a":2}' },
            { name = "an array at the top level", body = "[1,2,3]" },
            { name = "a string at the top level", body = '"text"' },
            { name = "truncated JSON", body = '{"a":' },
            { name = "an empty body", body = "" },
        }
        for i, case in ipairs(bad) do
            it("answers " .. case.name .. " with 400 invalid_json", function()
                local id = "json" .. i
                local res = post_json(case.body, id)
                assert.equal(400, res.status)
                assert.is_table(res.json)
                assert.equal("invalid_json", res.json.error.code)
                assert.equal(id, res.json.error.requestId)
                assert_serving()
                assert.same({}, srv:unexpected_errors())
            end)
        end

        it("accepts nesting under the depth limit and valid UTF-8", function()
            local nested = '{"a":' .. string.rep("[", 20) .. "7" .. string.rep("]", 20)
                .. ',"s":"caf\xc3\xa9 \xe2\x9c\x93"}'
            local res = post_json(nested, "jsonok")
            assert.equal(200, res.status)
            local v = res.json.a
            for _ = 1, 20 do
                assert.is_table(v)
                assert.equal(1, #v)
                v = v[1]
            end
            assert.equal(7, v)
            assert.equal("caf\xc3\xa9 \xe2\x9c\x93", res.json.s)
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    describe("request_timeout_s", function()
        local loops = {
            { path = "/test/sleeploop", id = "deadsleep", what = "a handler sleeping in a loop" },
            { path = "/test/cpuloop", id = "deadcpu", what = "a handler looping on the CPU" },
        }
        for _, case in ipairs(loops) do
            it("stops " .. case.what .. " with 503 at the deadline", function()
                local res, err = http.request {
                    port = srv.port, path = case.path, headers = { ["X-Request-Id"] = case.id },
                    timeout = REQUEST_TIMEOUT + 10,
                }
                assert.is_table(res, "no answer: " .. tostring(err))
                assert.equal(503, res.status)
                assert.is_table(res.json, "503 body is not JSON: " .. tostring(res.body))
                assert.equal("service_unavailable", res.json.error.code)
                assert.equal(case.id, res.json.error.requestId)
                assert.is_true(res.elapsed >= REQUEST_TIMEOUT - 0.5, "answered too early: " .. res.elapsed .. " s")

                local entry = srv:wait_entry { level = "error", requestId = case.id }
                assert.is_table(entry, "no error line for " .. case.id)
                assert.equal("request deadline exceeded", entry.msg)
                assert_serving()
                assert.same({}, srv:unexpected_errors { '"requestId":"' .. case.id .. '"' })
            end)
        end

        it("serves other requests while a handler sleeps towards its deadline", function()
            local results = http.run {
                function()
                    local res = assert(http.request {
                        port = srv.port, path = "/test/sleeploop", headers = { ["X-Request-Id"] = "deadother" },
                        timeout = REQUEST_TIMEOUT + 10,
                    })
                    res.finished_at = http.now()
                    return res
                end,
                function()
                    -- Once the looping handler is running, /health must still answer.
                    local deadline = http.now() + 5
                    while #srv:entries { msg = "sleeploop started", requestId = "deadother" } == 0 do
                        assert(http.now() < deadline, "the looping handler never started")
                        http.sleep(0.02)
                    end
                    local res = assert(http.request { port = srv.port, path = "/health" })
                    res.finished_at = http.now()
                    return res
                end,
            }
            assert.is_true(results[1].ok, results[1].err)
            assert.is_true(results[2].ok, results[2].err)
            local looping, health = results[1].value, results[2].value
            assert.equal(503, looping.status)
            assert.equal(200, health.status)
            assert.is_true(health.finished_at < looping.finished_at)
            assert.is_table(srv:wait_entry { msg = "request deadline exceeded", requestId = "deadother" })
            assert.same({}, srv:unexpected_errors { '"requestId":"deadother"' })
        end)
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
