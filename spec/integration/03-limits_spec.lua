-- Limits: body and header sizes, malformed and abandoned requests, slow
-- clients, hostile JSON and the per-request deadline.
--
-- Bodies and header blocks over their limits get API.md's JSON error body
-- (413 payload_too_large, 400 bad_request) with the request id, after the
-- route is checked (404/405 first), and the connection closes: what the
-- client sent after the refused request's headers is never read as a request.
local suite = require "support.suite"
local http = require "support.http"

local BODY_LIMIT <const> = 65536
local HEADER_LIMIT <const> = 8192
local ROUTE_LIMIT <const> = 4 * 65536 -- /test/bigecho's own body_bytes (fixtures/test_routes.lua)
local READ_TIMEOUT <const> = 2
local REQUEST_TIMEOUT <const> = 2
-- How long past read_timeout_s a close is waited for: the sweep acts within
-- about a second, and a busy machine may take a good while longer.
local CLOSE_MARGIN <const> = 15

describe("limits", function()
    local srv = suite.server {
        config = {
            workers = 1,
            limits = {
                body_bytes = BODY_LIMIT,
                header_bytes = HEADER_LIMIT,
                read_timeout_s = READ_TIMEOUT,
                request_timeout_s = REQUEST_TIMEOUT,
            },
        },
    }

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

    -- Sends text on a new connection (a peer that answers and closes before
    -- all of it is sent is fine) and reads responses until the server closes
    -- the connection: returns them and how reading ended.
    local function exchange(text)
        local sock = assert(http.raw(srv.port))
        local conn = http.reader(sock)
        conn:send(text, 5)
        local responses = {}
        local res, err
        repeat
            res, err = conn:response(5)
            responses[#responses + 1] = res
        until not res
        sock:close()
        return responses, err
    end

    -- An API error with its request id in the body and the header, on a
    -- response that closes the connection.
    local function assert_error(res, status, code, id)
        assert.is_table(res, "no response")
        assert.equal(status, res.status)
        assert.is_table(res.json, "the body is not JSON: " .. tostring(res.body))
        assert.equal(code, res.json.error.code)
        assert.equal(id, res.json.error.requestId)
        assert.equal(id, res.headers["x-request-id"])
        assert.equal("close", res.headers.connection)
    end

    local function post_head(path, id, framing, method)
        return (method or "POST") .. " " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            .. "X-Request-Id: " .. id .. "\r\n" .. framing .. "\r\n"
    end

    -- A request that must never be answered: it hides in a refused body.
    local SMUGGLED <const> = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

    local function chunk(data)
        return string.format("%x\r\n%s\r\n", #data, data)
    end

    it("accepts a body of exactly limits.body_bytes", function()
        local body = body_of(BODY_LIMIT)
        assert.equal(BODY_LIMIT, #body)
        local res = post_json(body, "bodyfits")
        assert.equal(200, res.status)
        assert.equal(BODY_LIMIT - 8, #res.json.a)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a Content-Length one byte over limits.body_bytes with 413 JSON, from the headers alone", function()
        local sock = assert(http.raw(srv.port))
        assert(sock:send(post_head("/test/echo", "clover", "Content-Length: " .. (BODY_LIMIT + 1) .. "\r\n")))
        local res, err = http.read_response(sock, 5)
        sock:close()
        assert.is_table(res, "no response before the body: " .. tostring(err))
        assert_error(res, 413, "payload_too_large", "clover")
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a Content-Length over the limit with 413 and never reads its body as a request", function()
        local body = SMUGGLED .. string.rep("x", BODY_LIMIT + 1 - #SMUGGLED)
        local responses, err = exchange(post_head("/test/echo", "clbody", "Content-Length: " .. #body .. "\r\n")
            .. body)
        assert.equal(1, #responses)
        assert_error(responses[1], 413, "payload_too_large", "clbody")
        assert.is_true(is_closed(err), "the connection stayed open: " .. tostring(err))
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a chunked body that grows past limits.body_bytes with 413 and closes the connection", function()
        local piece = string.rep("c", 8192)
        local chunks = {}
        for i = 1, BODY_LIMIT // #piece + 1 do chunks[i] = chunk(piece) end
        local text = post_head("/test/echo", "chunkover", "Transfer-Encoding: chunked\r\n")
            .. table.concat(chunks) .. chunk(SMUGGLED) .. "0\r\n\r\n" .. SMUGGLED
        local responses, err = exchange(text)
        assert.equal(1, #responses)
        assert_error(responses[1], 413, "payload_too_large", "chunkover")
        assert.is_true(is_closed(err), "the connection stayed open: " .. tostring(err))
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a chunk declared larger than the limit with 413 before its data comes", function()
        local sock = assert(http.raw(srv.port))
        assert(sock:send(post_head("/test/echo", "chunkbig", "Transfer-Encoding: chunked\r\n")
            .. string.format("%x\r\n", 64 * 1024 * 1024)))
        local res, err = http.read_response(sock, 5)
        sock:close()
        assert.is_table(res, "no response before the data: " .. tostring(err))
        assert_error(res, 413, "payload_too_large", "chunkbig")
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("accepts a chunked body of exactly limits.body_bytes", function()
        local body = body_of(BODY_LIMIT)
        local text = post_head("/test/echo", "chunkfits", "Transfer-Encoding: chunked\r\nConnection: close\r\n")
            .. chunk(body:sub(1, 1000)) .. chunk(body:sub(1001)) .. "0\r\n\r\n"
        local responses = exchange(text)
        assert.equal(1, #responses)
        assert.equal(200, responses[1].status)
        assert.equal(BODY_LIMIT - 8, #responses[1].json.a)
        assert.same({}, srv:unexpected_errors())
    end)

    it("keeps a keep-alive connection in step: the request before is answered, nothing after", function()
        local body = string.rep("x", BODY_LIMIT + 1)
        local text = "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: before\r\n\r\n"
            .. post_head("/test/echo", "keepover", "Content-Length: " .. #body .. "\r\n") .. body .. SMUGGLED
        local responses, err = exchange(text)
        assert.equal(2, #responses)
        assert.equal(200, responses[1].status)
        assert.equal("before", responses[1].headers["x-request-id"])
        assert_error(responses[2], 413, "payload_too_large", "keepover")
        assert.is_true(is_closed(err), "the connection stayed open: " .. tostring(err))
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("checks the route first: 404 and 405 before 413", function()
        local over = "Content-Length: " .. (BODY_LIMIT + 1) .. "\r\n"
        local responses = exchange(post_head("/test/nothing-here", "over404", over))
        assert.equal(1, #responses)
        assert_error(responses[1], 404, "not_found", "over404")
        responses = exchange(post_head("/test/echo", "over405", over, "PUT"))
        assert.equal(1, #responses)
        assert_error(responses[1], 405, "method_not_allowed", "over405")
        assert.equal("POST", responses[1].headers.allow)
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("lets a route set its own body limit", function()
        local responses = exchange(post_head("/test/echo", "defaultover", "Content-Length: " .. (BODY_LIMIT * 2)
            .. "\r\n"))
        assert_error(responses[1], 413, "payload_too_large", "defaultover")
        local res = assert(http.request {
            port = srv.port, method = "POST", path = "/test/bigecho", body = body_of(ROUTE_LIMIT),
            headers = { ["Content-Type"] = "application/json" },
        })
        assert.equal(200, res.status)
        assert.equal(ROUTE_LIMIT - 8, #res.json.a)
        responses = exchange(post_head("/test/bigecho", "routeover", "Content-Length: " .. (ROUTE_LIMIT + 1)
            .. "\r\n"))
        assert_error(responses[1], 413, "payload_too_large", "routeover")
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers Expect: 100-continue with 100 Continue, then the request", function()
        local body = '{"asked":true}'
        local sock = assert(http.raw(srv.port))
        local conn = http.reader(sock)
        assert(conn:send(post_head("/test/echo", "continue", "Content-Length: " .. #body
            .. "\r\nExpect: 100-continue\r\n")))
        local interim = conn:response(5)
        assert.is_table(interim, "no 100 Continue")
        assert.equal(100, interim.status)
        assert(conn:send(body))
        local res = conn:response(5)
        sock:close()
        assert.is_table(res)
        assert.equal(200, res.status)
        assert.same({ asked = true }, res.json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("serves pipelined requests in order", function()
        local body = '{"n":2}'
        local text = "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe1\r\n\r\n"
            .. post_head("/test/echo", "pipe2", "Content-Length: " .. #body .. "\r\n") .. body
            .. "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe3\r\nConnection: close\r\n\r\n"
        local responses = exchange(text)
        assert.equal(3, #responses)
        for i, res in ipairs(responses) do assert.equal("pipe" .. i, res.headers["x-request-id"]) end
        assert.same({ n = 2 }, responses[2].json)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers framing it cannot trust with 400 bad_request and closes", function()
        local responses, err = exchange(post_head("/test/echo", "twoframes",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") .. "0\r\n\r\n" .. SMUGGLED)
        assert.equal(1, #responses)
        assert_error(responses[1], 400, "bad_request", "twoframes")
        assert.is_true(is_closed(err), "the connection stayed open: " .. tostring(err))
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

    it("answers a 100 KB header block with 400 bad_request JSON, and keeps serving", function()
        local responses, err = exchange("GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: hdrbig\r\nX-Big: "
            .. string.rep("a", 100 * 1024) .. "\r\n\r\n" .. SMUGGLED)
        assert.equal(1, #responses)
        assert_error(responses[1], 400, "bad_request", "hdrbig")
        assert.is_true(is_closed(err), "the connection stayed open: " .. tostring(err))
        assert_serving()
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a header block just over limits.header_bytes on a keep-alive connection with 400", function()
        local head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: hdrover\r\nX-Pad: "
        local text = head .. string.rep("p", HEADER_LIMIT - #head - 4 + 1) .. "\r\n\r\n"
        assert.equal(HEADER_LIMIT + 1, #text)
        local responses, err = exchange("GET /health HTTP/1.1\r\nHost: x\r\n\r\n" .. text .. SMUGGLED)
        assert.equal(2, #responses)
        assert.equal(200, responses[1].status)
        assert_error(responses[2], 400, "bad_request", "hdrover")
        assert.is_true(is_closed(err), "the connection stayed open: " .. tostring(err))
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
