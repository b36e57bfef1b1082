-- A small HTTP/1.1 client for the integration specs, on luasocket.
--
--   http.request{ port =, method =, path =, headers =, body =, timeout =, source = }
--       (source: the local address to connect from, e.g. "127.0.0.2")
--       -> { status =, reason =, headers = { lower-case name = value }, body =, json = }
--          or nil, message ("closed", "timeout", ...)
--   http.connect(port) -> conn; conn:request{...} reuses one socket; conn:close()
--   http.raw(port)     -> a connected luasocket tcp object (blocking, 5 s timeout)
--   http.read_response(sock, timeout) parses one response from any socket
--   http.reader(sock)  -> reader:send(data), reader:response(timeout): several
--       responses from one raw socket
--   http.run{ f1, f2, ... } runs functions as coroutines; inside them every
--       request of this module (and http.sleep) waits without blocking the
--       others. Returns { { ok =, value = | err = }, ... } in the same order.
--   http.concurrent{ spec1, spec2, ... } runs requests at the same time and
--       returns their results in order, each with .elapsed (seconds).
--
-- Sockets are non-blocking; waiting is done with socket.select, either
-- directly (outside http.run) or by yielding to the scheduler of http.run.
local socket = require "socket"
local cjson = require "cjson.safe"

local M = {}

local HOST <const> = "127.0.0.1"
-- stretched when the server runs slower than usual (support.server: SLOW)
local DEFAULT_TIMEOUT <const> = 10 * (tonumber(os.getenv("STEEPLE_SPEC_SLOW") or "") or 1)

local now = socket.gettime
M.now = now

-- Coroutines run by http.run: they yield instead of blocking.
local scheduled = setmetatable({}, { __mode = "k" })

-- Waits until sock is readable ("r") or writable ("w") or the deadline passes.
-- Returns true when ready, false on timeout.
local function wait(sock, mode, deadline)
    local co = coroutine.running()
    if scheduled[co] then
        return coroutine.yield(sock, mode, deadline)
    end
    local left = deadline - now()
    if left <= 0 then return false end
    local r, w = nil, nil
    if mode == "r" then r = { sock } else w = { sock } end
    local readable, writable = socket.select(r, w, left)
    if mode == "r" then return readable[sock] ~= nil end
    return writable[sock] ~= nil
end

-- Sleeps for s seconds (inside http.run: lets the other tasks run).
function M.sleep(s)
    local co = coroutine.running()
    if scheduled[co] then
        coroutine.yield(nil, nil, now() + s)
    else
        socket.sleep(s)
    end
end

-- A buffered, non-blocking reader/writer around one socket.
local Stream = {}
Stream.__index = Stream

local function new_stream(sock)
    sock:settimeout(0)
    return setmetatable({ sock = sock, buf = "", eof = false }, Stream)
end

-- Reads more bytes into the buffer. Returns true, or nil, "closed"/"timeout"/error.
function Stream:fill(deadline)
    if self.eof then return nil, "closed" end
    while true do
        local data, err, partial = self.sock:receive(8192)
        local got = data or partial
        if got and #got > 0 then
            self.buf = self.buf .. got
            if err == "closed" then self.eof = true end
            return true
        end
        if err == "closed" then
            self.eof = true
            return nil, "closed"
        elseif err ~= "timeout" then
            self.eof = true
            return nil, err
        end
        if not wait(self.sock, "r", deadline) then return nil, "timeout" end
    end
end

-- Returns the next line without its CRLF, or nil, err.
function Stream:line(deadline)
    while true do
        local i = self.buf:find("\n", 1, true)
        if i then
            local line = self.buf:sub(1, i - 1):gsub("\r$", "")
            self.buf = self.buf:sub(i + 1)
            return line
        end
        local ok, err = self:fill(deadline)
        if not ok then return nil, err end
    end
end

-- Returns exactly n bytes, or nil, err.
function Stream:bytes(n, deadline)
    while #self.buf < n do
        local ok, err = self:fill(deadline)
        if not ok then return nil, err end
    end
    local out = self.buf:sub(1, n)
    self.buf = self.buf:sub(n + 1)
    return out
end

-- Returns everything until the peer closes.
function Stream:rest(deadline)
    while true do
        local ok, err = self:fill(deadline)
        if not ok then
            if err == "closed" then break end
            return nil, err
        end
    end
    local out = self.buf
    self.buf = ""
    return out
end

-- Sends all of data. Returns true or nil, err.
function Stream:send(data, deadline)
    local i = 1
    while i <= #data do
        local last, err, partial = self.sock:send(data, i)
        if last then
            i = last + 1
        elseif err == "timeout" then
            i = partial + 1
            if i <= #data and not wait(self.sock, "w", deadline) then return nil, "timeout" end
        else
            return nil, err
        end
    end
    return true
end

local function connect(port, host, deadline, source)
    local sock = socket.tcp()
    sock:settimeout(math.max(0.01, deadline - now()))
    local ok, err = true, nil
    if source then ok, err = sock:bind(source, 0) end
    if ok then ok, err = sock:connect(host or HOST, port) end
    if not ok then
        sock:close()
        return nil, err
    end
    sock:setoption("tcp-nodelay", true)
    return sock
end

local function format_request(spec, port, keep_alive)
    local method = spec.method or "GET"
    local lines = { string.format("%s %s HTTP/1.1", method, spec.path or "/") }
    local headers = spec.headers or {}
    local has = {}
    for k in pairs(headers) do has[k:lower()] = true end
    if not has.host then lines[#lines + 1] = "Host: " .. HOST .. ":" .. port end
    if not keep_alive and not has.connection then lines[#lines + 1] = "Connection: close" end
    if spec.body and not has["content-length"] then
        lines[#lines + 1] = "Content-Length: " .. #spec.body
    end
    local names = {}
    for k in pairs(headers) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do lines[#lines + 1] = k .. ": " .. headers[k] end
    return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (spec.body or "")
end

local function read_chunked(stream, deadline)
    local parts = {}
    while true do
        local line, err = stream:line(deadline)
        if not line then return nil, err end
        local size = tonumber(line:match("^%x+"), 16)
        if not size then return nil, "bad chunk size: " .. line end
        if size == 0 then
            repeat -- trailers
                line, err = stream:line(deadline)
                if not line then return nil, err end
            until line == ""
            return table.concat(parts)
        end
        local data
        data, err = stream:bytes(size, deadline)
        if not data then return nil, err end
        parts[#parts + 1] = data
        line, err = stream:line(deadline)
        if not line then return nil, err end
    end
end

-- Reads one response from the stream. method: the request method (HEAD has no body).
local function read_response(stream, method, deadline)
    local status_line, err = stream:line(deadline)
    if not status_line then return nil, err end
    local version, status, reason = status_line:match("^(HTTP/%d%.%d) (%d%d%d) ?(.*)$")
    if not status then return nil, "bad status line: " .. status_line end
    local res = { status = tonumber(status), reason = reason, version = version, headers = {}, header_list = {} }
    while true do
        local line
        line, err = stream:line(deadline)
        if not line then return nil, err end
        if line == "" then break end
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if not name then return nil, "bad header line: " .. line end
        name = name:lower()
        res.header_list[#res.header_list + 1] = { name, value }
        if res.headers[name] then
            res.headers[name] = res.headers[name] .. ", " .. value
        else
            res.headers[name] = value
        end
    end
    local body = ""
    local no_body = method == "HEAD" or res.status == 204 or res.status == 304 or res.status < 200
    if not no_body then
        local te = res.headers["transfer-encoding"]
        local length = res.headers["content-length"]
        if te and te:lower():find("chunked", 1, true) then
            body, err = read_chunked(stream, deadline)
        elseif length then
            body, err = stream:bytes(tonumber(length), deadline)
        else
            body, err = stream:rest(deadline)
        end
        if not body then return nil, err end
    end
    res.body = body
    local ct = res.headers["content-type"]
    if ct and ct:lower():find("application/json", 1, true) and #body > 0 then
        res.json = cjson.decode(body)
    end
    local conn = (res.headers.connection or ""):lower()
    res.closes = conn == "close" or (version == "HTTP/1.0" and conn ~= "keep-alive")
    return res
end

-- One request on a new connection. Returns the response or nil, err.
function M.request(spec)
    local started = now()
    local deadline = started + (spec.timeout or DEFAULT_TIMEOUT)
    local sock, err = connect(spec.port, spec.host, deadline, spec.source)
    if not sock then return nil, "connect: " .. tostring(err) end
    local stream = new_stream(sock)
    local ok
    ok, err = stream:send(format_request(spec, spec.port, false), deadline)
    if not ok then
        sock:close()
        return nil, err
    end
    local res
    res, err = read_response(stream, spec.method or "GET", deadline)
    sock:close()
    if res then res.elapsed = now() - started end
    return res, err
end

-- Keep-alive connections --------------------------------------------------

local Conn = {}
Conn.__index = Conn

-- Opens one connection that conn:request reuses.
function M.connect(port, timeout)
    local sock, err = connect(port, nil, now() + (timeout or DEFAULT_TIMEOUT))
    if not sock then return nil, err end
    return setmetatable({ port = port, stream = new_stream(sock), sock = sock, requests = 0 }, Conn)
end

-- Sends one request on this connection; never reconnects.
function Conn:request(spec)
    local started = now()
    local deadline = started + (spec.timeout or DEFAULT_TIMEOUT)
    local ok, err = self.stream:send(format_request(spec, self.port, true), deadline)
    if not ok then return nil, err end
    local res
    res, err = read_response(self.stream, spec.method or "GET", deadline)
    if not res then return nil, err end
    self.requests = self.requests + 1
    res.elapsed = now() - started
    return res
end

function Conn:close()
    self.sock:close()
end

-- Raw access ----------------------------------------------------------------

-- Returns a connected, blocking luasocket tcp object (timeout 5 s).
function M.raw(port, timeout)
    local sock, err = connect(port, nil, now() + (timeout or 5))
    if not sock then return nil, err end
    sock:settimeout(timeout or 5)
    return sock
end

-- Reads one response from a raw socket (made non-blocking). Returns the
-- response, or nil, "closed" when the peer closed without answering.
function M.read_response(sock, timeout, method)
    return read_response(new_stream(sock), method or "GET", now() + (timeout or 5))
end

-- Reads successive responses from one raw socket (made non-blocking), with
-- no byte lost between them: reader:send(data, timeout) -> true or nil, err;
-- reader:response(timeout, method) -> the next response, or nil, err.
function M.reader(sock)
    local stream = new_stream(sock)
    return {
        send = function(_, data, timeout) return stream:send(data, now() + (timeout or 5)) end,
        response = function(_, timeout, method)
            return read_response(stream, method or "GET", now() + (timeout or 5))
        end,
    }
end

-- Waits until the peer closes sock (or sends something). Returns "closed",
-- "data" or "timeout".
function M.wait_closed(sock, timeout)
    sock:settimeout(0)
    local deadline = now() + timeout
    while true do
        local data, err, partial = sock:receive(8192)
        if (data and #data > 0) or (partial and #partial > 0) then return "data" end
        if err == "closed" or (err ~= "timeout" and err ~= nil) then return "closed" end
        if not wait(sock, "r", deadline) then return "timeout" end
    end
end

-- Concurrency ---------------------------------------------------------------

-- Runs the functions as coroutines until all have finished or timeout
-- (default 60 s) passes. Returns { { ok = true, value = } or { ok = false, err = } }.
function M.run(funcs, timeout)
    local hard_deadline = now() + (timeout or 60)
    local tasks, results = {}, {}
    local function step(task, ...)
        local res = table.pack(coroutine.resume(task.co, ...))
        if not res[1] then
            results[task.index] = { ok = false, err = debug.traceback(task.co, tostring(res[2])) }
            task.done = true
        elseif coroutine.status(task.co) == "dead" then
            results[task.index] = { ok = true, value = res[2] }
            task.done = true
        else
            task.sock, task.mode, task.deadline = res[2], res[3], res[4]
        end
    end
    for i, f in ipairs(funcs) do
        local co = coroutine.create(f)
        scheduled[co] = true
        tasks[i] = { co = co, index = i }
    end
    for _, task in ipairs(tasks) do step(task) end
    while true do
        local r, w, pending = {}, {}, 0
        local next_deadline = hard_deadline
        for _, task in ipairs(tasks) do
            if not task.done then
                pending = pending + 1
                if task.mode == "r" then r[#r + 1] = task.sock
                elseif task.mode == "w" then w[#w + 1] = task.sock end
                if task.deadline and task.deadline < next_deadline then next_deadline = task.deadline end
            end
        end
        if pending == 0 then break end
        local t = now()
        if t >= hard_deadline then
            for _, task in ipairs(tasks) do
                if not task.done then
                    results[task.index] = { ok = false, err = "http.run: task still running at the deadline" }
                    task.done = true
                end
            end
            break
        end
        local readable, writable = socket.select(r, w, math.max(0, next_deadline - t))
        t = now()
        for _, task in ipairs(tasks) do
            if not task.done then
                local ready = (task.mode == "r" and readable[task.sock])
                    or (task.mode == "w" and writable[task.sock])
                if ready then
                    step(task, true)
                elseif task.deadline and t >= task.deadline then
                    step(task, false)
                end
            end
        end
    end
    return results
end

-- Runs the request specs at the same time. Returns, in order, the responses
-- (with .elapsed) or { error = message }.
function M.concurrent(specs, timeout)
    local funcs = {}
    for i, spec in ipairs(specs) do
        funcs[i] = function()
            local res, err = M.request(spec)
            if not res then return { error = err } end
            res.finished_at = now()
            return res
        end
    end
    local out = {}
    for i, r in ipairs(M.run(funcs, timeout)) do
        out[i] = r.ok and r.value or { error = r.err }
    end
    return out
end

M.json_decode = cjson.decode
M.json_encode = cjson.encode

return M
