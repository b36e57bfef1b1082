-- HTTP basics against the real binary: health, routing errors, request ids,
-- content types, keep-alive, HEAD and the request metrics.
local suite = require "support.suite"
local http = require "support.http"

local ID_FORMAT <const> = "^[A-Za-z0-9._-]+$"

describe("http", function()
    local srv

    local function get(path, headers)
        return assert(http.request { port = srv.port, path = path, headers = headers })
    end

    -- Asserts the API error shape and returns the error object.
    local function assert_error(res, status, code)
        assert.equal(status, res.status)
        assert.matches("^application/json", res.headers["content-type"])
        assert.is_table(res.json, "error body is not JSON: " .. tostring(res.body))
        local e = res.json.error
        assert.is_table(e)
        assert.equal(code, e.code)
        assert.is_string(e.message)
        assert.is_true(#e.message > 0)
        assert.equal(res.headers["x-request-id"], e.requestId)
        assert.is_nil(e.fields)
        return e
    end

    -- Polls /metrics until fn(values) is true (at most 3 s); returns the last values.
    local function metrics_until(fn)
        local deadline = http.now() + 3
        local values = srv:metrics()
        while not fn(values) and http.now() < deadline do
            http.sleep(0.05)
            values = srv:metrics()
        end
        return values
    end

    srv = suite.server { config = { workers = 2 } }

    it("answers GET /health with 200 {status: ok} and a request id", function()
        local res = get("/health")
        assert.equal(200, res.status)
        assert.same({ status = "ok" }, res.json)
        assert.equal("application/json; charset=utf-8", res.headers["content-type"])
        local id = res.headers["x-request-id"]
        assert.is_string(id)
        assert.matches(ID_FORMAT, id)
        assert.is_true(#id <= 64)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers an unknown path with 404 not_found", function()
        local res = get("/no/such/path")
        assert_error(res, 404, "not_found")
        local deep = get("/health/extra")
        assert_error(deep, 404, "not_found")
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a known path with the wrong method with 405 and Allow", function()
        local res = assert(http.request { port = srv.port, method = "DELETE", path = "/health" })
        assert_error(res, 405, "method_not_allowed")
        assert.is_string(res.headers.allow)
        assert.matches("GET", res.headers.allow)

        local post_only = get("/test/echo")
        assert_error(post_only, 405, "method_not_allowed")
        assert.matches("POST", post_only.headers.allow)
        assert.not_matches("GET", post_only.headers.allow)
        assert.same({}, srv:unexpected_errors())
    end)

    it("echoes a well-formed X-Request-Id in the header and the error body", function()
        for _, id in ipairs { "abc", "A.b_c-9", string.rep("x", 64), "0" } do
            local ok_res = get("/health", { ["X-Request-Id"] = id })
            assert.equal(200, ok_res.status)
            assert.equal(id, ok_res.headers["x-request-id"])

            local err_res = get("/nope", { ["X-Request-Id"] = id })
            local e = assert_error(err_res, 404, "not_found")
            assert.equal(id, err_res.headers["x-request-id"])
            assert.equal(id, e.requestId)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("replaces a malformed X-Request-Id with a new one", function()
        local bad_ids = { string.rep("x", 65), "has space", "semi;colon", "sl/ash", "caf\xc3\xa9", "q\"uote" }
        for _, bad in ipairs(bad_ids) do
            local res = get("/nope", { ["X-Request-Id"] = bad })
            local e = assert_error(res, 404, "not_found")
            local id = res.headers["x-request-id"]
            assert.is_string(id)
            assert.not_equal(bad, id)
            assert.matches(ID_FORMAT, id)
            assert.is_true(#id >= 1 and #id <= 64)
            assert.equal(id, e.requestId)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("gives every request its own id", function()
        local seen, n = {}, 0
        for _ = 1, 30 do
            local id = get("/health").headers["x-request-id"]
            assert.is_nil(seen[id], "request id repeated: " .. tostring(id))
            seen[id] = true
            n = n + 1
        end
        assert.equal(30, n)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers a body sent without Content-Type: application/json with 415", function()
        local body = '{"a":1}'
        local cases = {
            { headers = {}, status = 415 },
            { headers = { ["Content-Type"] = "text/plain" }, status = 415 },
            { headers = { ["Content-Type"] = "application/jsonx" }, status = 415 },
            { headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }, status = 415 },
            { headers = { ["Content-Type"] = "application/json" }, status = 200 },
            { headers = { ["Content-Type"] = "Application/JSON; charset=utf-8" }, status = 200 },
        }
        for _, case in ipairs(cases) do
            local res = assert(http.request {
                port = srv.port, method = "POST", path = "/test/echo", headers = case.headers, body = body,
            })
            if case.status == 415 then
                assert_error(res, 415, "unsupported_media_type")
            else
                assert.equal(200, res.status)
                assert.same({ a = 1 }, res.json)
            end
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("serves 100 requests over one keep-alive connection", function()
        local conn = assert(http.connect(srv.port))
        for i = 1, 100 do
            local res, err = conn:request { path = "/health", headers = { ["X-Request-Id"] = "ka" .. i } }
            assert.is_nil(err)
            assert.equal(200, res.status)
            assert.same({ status = "ok" }, res.json)
            assert.equal("ka" .. i, res.headers["x-request-id"])
            assert.is_false(res.closes)
        end
        conn:close()
        assert.equal(100, conn.requests)
        -- The server saw exactly these 100 requests, each once.
        srv:wait_entry { msg = "request", requestId = "ka100" }
        local count = 0
        for _, e in ipairs(srv:entries { msg = "request", route = "/health" }) do
            if tostring(e.requestId):match("^ka%d+$") then count = count + 1 end
        end
        assert.equal(100, count)
        assert.same({}, srv:unexpected_errors())
    end)

    it("answers HEAD /health with the headers and no body", function()
        local conn = assert(http.connect(srv.port))
        local head = assert(conn:request { method = "HEAD", path = "/health" })
        assert.equal(200, head.status)
        assert.equal("", head.body)
        assert.matches(ID_FORMAT, head.headers["x-request-id"])
        -- Had the server sent a body, it would be read as the next status line.
        local after = assert(conn:request { path = "/health" })
        assert.equal(200, after.status)
        assert.same({ status = "ok" }, after.json)
        conn:close()

        local sock = assert(http.raw(srv.port))
        assert(sock:send("HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        local all = sock:receive("*a")
        sock:close()
        local header_block, rest = all:match("^(.-\r\n\r\n)(.*)$")
        assert.is_string(header_block)
        assert.matches("^HTTP/1%.1 200", header_block)
        assert.equal("", rest)
        assert.same({}, srv:unexpected_errors())
    end)

    it("counts requests by route and status in /metrics", function()
        local ok_key = 'steeple_http_requests_total{route="/health",status="200"}'
        local nf_key = 'steeple_http_requests_total{route="unmatched",status="404"}'
        local before, res = srv:metrics()
        assert.equal("text/plain; version=0.0.4", res.headers["content-type"])
        for _ = 1, 5 do assert.equal(200, get("/health").status) end
        for _ = 1, 3 do assert.equal(404, get("/metrics-typo").status) end
        local after = metrics_until(function(v)
            return (v[ok_key] or 0) >= (before[ok_key] or 0) + 5 and (v[nf_key] or 0) >= (before[nf_key] or 0) + 3
        end)
        assert.equal(5, (after[ok_key] or 0) - (before[ok_key] or 0))
        assert.equal(3, (after[nf_key] or 0) - (before[nf_key] or 0))

        local count = after.steeple_http_request_duration_seconds_count
        assert.is_number(count)
        assert.is_true(count - (before.steeple_http_request_duration_seconds_count or 0) >= 8)
        assert.equal(count, after['steeple_http_request_duration_seconds_bucket{le="+Inf"}'])
        assert.is_true(after.steeple_http_request_duration_seconds_sum >= 0)
        -- Buckets are cumulative.
        assert.is_true(after['steeple_http_request_duration_seconds_bucket{le="0.001"}']
            <= after['steeple_http_request_duration_seconds_bucket{le="1"}'])
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
