-- The per-worker connection cap: at limits.max_connections the worker stops
-- accepting, and starts again once connections close.
local server = require "support.server"
local http = require "support.http"

local CAP <const> = 4

describe("connection cap", function()
    local srv

    setup(function()
        srv = server.start {
            config = { workers = 1, limits = { max_connections = CAP, read_timeout_s = 30 } },
        }
    end)

    teardown(function()
        if srv then srv:stop(5) end
        server.cleanup()
    end)

    before_each(function()
        srv:mark()
    end)

    it("holds new requests while the cap is reached and serves them once connections close", function()
        local idle = {}
        for i = 1, CAP do
            idle[i] = assert(http.raw(srv.port))
            -- a request on each proves the worker accepted it
            idle[i]:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            local res = assert(http.read_response(idle[i], 5))
            assert.equal(200, res.status)
        end
        -- the kernel still completes the handshake (backlog), but no answer comes
        local waiting = assert(http.raw(srv.port))
        waiting:send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        local early = http.read_response(waiting, 1.5)
        assert.is_nil(early, "a request was served past the connection cap")
        assert.is_truthy(srv:wait_log("connection cap reached", 5))

        for i = 1, CAP do idle[i]:close() end
        local res = assert(http.read_response(waiting, 5))
        assert.equal(200, res.status)
        waiting:close()
        -- and the worker goes on accepting normally
        for _ = 1, 3 do
            assert.equal(200, assert(http.request { port = srv.port, path = "/health" }).status)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
