-- The per-worker connection cap: at limits.max_connections the worker stops
-- accepting and closes the connections idle longest, so idle keep-alive
-- connections never lock new clients out; connections whose requests are
-- running are never closed.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"

local CAP <const> = 4

-- Opens n connections, each after one answered request: idle keep-alive.
local function idle_connections(port, n)
    local list = {}
    for i = 1, n do
        list[i] = assert(http.raw(port))
        list[i]:send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        local res = assert(http.read_response(list[i], 5))
        assert.equal(200, res.status)
    end
    return list
end

describe("connection cap", function()
    local srv = suite.server {
        config = { workers = 1, limits = { max_connections = CAP, read_timeout_s = 30, request_timeout_s = 10 } },
    }

    it("closes the idle keep-alive connections that waited longest to let a new client in", function()
        local idle = idle_connections(srv.port, CAP)
        local waiting = assert(http.raw(srv.port))
        waiting:send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        local res = http.read_response(waiting, 5)
        assert.is_table(res, "the new client was never answered")
        assert.equal(200, res.status)
        assert.is_truthy(srv:wait_log("connection cap reached", 5))
        assert.is_truthy(srv:wait_log("closed %d+ idle connections", 5))
        -- the oldest idle connection is the one that went
        idle[1]:settimeout(2)
        local _, err = idle[1]:receive(1)
        assert.equal("closed", err)
        for i = 1, CAP do idle[i]:close() end
        waiting:close()
        assert.same({}, srv:unexpected_errors())
    end)

    it("never closes a connection whose request is running, and serves the newcomer after", function()
        local busy = {}
        for i = 1, CAP do
            busy[i] = assert(http.raw(srv.port))
            busy[i]:send("GET /test/sleep?ms=2500 HTTP/1.1\r\nHost: x\r\n\r\n")
        end
        assert.is_truthy(srv:wait_log_count("sleep started", CAP, 5))
        local waiting = assert(http.raw(srv.port))
        waiting:send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.is_nil(http.read_response(waiting, 1), "a request was served past the cap while all were busy")
        for i = 1, CAP do
            local res = assert(http.read_response(busy[i], 10))
            assert.equal(200, res.status)
        end
        local res = assert(http.read_response(waiting, 5))
        assert.equal(200, res.status)
        for i = 1, CAP do busy[i]:close() end
        waiting:close()
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)

-- 5,000 idle keep-alive connections from one address, held by a bash process
-- (/dev/tcp; luasocket's select stops at 1,024 descriptors): each sends one
-- request and never reads, so once answered it is idle on the server's side.
-- With the default caps (1,024 per worker, 512 per address) most are shed;
-- with the caps raised above them all stay open. Either way others are answered.
describe("5,000 idle keep-alive connections", function()
    local IDLE <const> = 5000

    -- The client-side sockets to port still established, and how many of
    -- them hold an answer (receive queue not empty).
    local function established(port)
        local out = server.capture(string.format(
            "ss -Htn state established '( dport = :%d )' 2>/dev/null", port))
        local all, answered = 0, 0
        for recv_q in out:gmatch("(%d+)%s+%d+%s+[^\n]*\n") do
            all = all + 1
            if tonumber(recv_q) > 0 then answered = answered + 1 end
        end
        return all, answered
    end

    local function hold_idle(port)
        local dir = server.tmpdir()
        server.write_file(dir .. "/hold.sh", string.format([[
ulimit -n %d 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for ((i = 0; i < %d; i++)); do
    exec {fd}<>/dev/tcp/127.0.0.1/%d || { echo "connect $i failed" >%s/opened; exit 1; }
    printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n' >&$fd
done
echo ok >%s/opened
mkfifo %s/fifo && exec {w}<>%s/fifo && read -r -t 300 _ <&$w
]], IDLE + 500, IDLE, port, dir, dir, dir, dir))
        assert(os.execute(string.format("bash %s/hold.sh >%s/out 2>&1 </dev/null & echo $! >%s/pid", dir, dir, dir)))
        local holder = { pid = assert(tonumber(server.capture("cat " .. dir .. "/pid"))) }
        function holder.stop() os.execute("kill -9 " .. holder.pid .. " 2>/dev/null") end
        server.wait_until(function() return server.read_file(dir .. "/opened") ~= nil end, 60)
        local opened = server.read_file(dir .. "/opened")
        if opened ~= "ok\n" then
            holder.stop()
            error("holding connections: " .. tostring(opened) .. (server.read_file(dir .. "/out") or ""))
        end
        return holder
    end

    local function others_answered(port)
        for i = 1, 20 do
            local res = http.request { port = port, path = "/health", timeout = 10 }
            assert.is_table(res, "request " .. i .. " was not answered")
            assert.equal(200, res.status)
        end
    end

    local holder

    after_each(function()
        if holder then holder.stop() end
        holder = nil
        server.cleanup()
    end)

    it("with the default caps: the idle ones are shed, others answered", function()
        local srv = server.start { config = { workers = 1, limits = { read_timeout_s = 60 } } }
        holder = hold_idle(srv.port)
        others_answered(srv.port)
        assert.is_truthy(srv:wait_log("closed %d+ ", 5), "no connection was shed")
        assert.is_true(server.wait_until(function() return established(srv.port) <= 1024 end, 5),
            established(srv.port) .. " connections still open past the cap of 1,024")
        holder.stop()
        srv:assert_stops_cleanly()
    end)

    it("with the caps above them: all stay open and answered, others answered", function()
        local srv = server.start { config = { workers = 1, limits = { read_timeout_s = 60,
            max_connections = IDLE + 1000, max_connections_per_address = 0 } } }
        holder = hold_idle(srv.port)
        local all, answered
        server.wait_until(function()
            all, answered = established(srv.port)
            return answered == IDLE
        end, 30)
        assert.are.equal(IDLE, all, "connections closed below the caps")
        assert.are.equal(IDLE, answered, "idle connections never answered")
        others_answered(srv.port)
        assert.is_nil(srv:log_contains("closed %d+ "), "connections were shed below the caps")
        holder.stop()
        srv:assert_stops_cleanly()
    end)
end)

describe("connections per client address", function()
    local srv
    local PER_ADDRESS <const> = 5

    setup(function()
        srv = server.start {
            config = { workers = 1,
                       limits = { max_connections = 100, max_connections_per_address = PER_ADDRESS,
                                  read_timeout_s = 60 } },
        }
    end)

    teardown(function()
        if srv then srv:stop(5) end
        server.cleanup()
    end)

    it("closes the newest idle connections of an address past limits.max_connections_per_address", function()
        local conns = idle_connections(srv.port, 20)
        assert.is_truthy(srv:wait_log("past limits.max_connections_per_address", 5))
        local open, closed = 0, 0
        for i, c in ipairs(conns) do
            c:settimeout(0.2)
            local _, err = c:receive(1)
            if err == "closed" then
                closed = closed + 1
                assert.is_true(i > PER_ADDRESS, "connection " .. i .. ", one of the oldest, was closed")
            else
                open = open + 1
            end
        end
        assert.equal(PER_ADDRESS, open)
        assert.equal(20 - PER_ADDRESS, closed)
        for _, c in ipairs(conns) do c:close() end
        -- the address is still served
        assert.equal(200, assert(http.request { port = srv.port, path = "/health" }).status)
        srv:assert_stops_cleanly()
    end)
end)
