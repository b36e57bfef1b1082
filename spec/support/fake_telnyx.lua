-- A fake Telnyx messaging API for the specs (plain HTTP on 127.0.0.1):
--
--   lua5.4 spec/support/fake_telnyx.lua PORT LOG [BLOCKED [CHAOS]]
--
-- POST /v2/messages answers by the message text:
--   contains "[500-once]"  500 the first time for that text, then like any other
--   contains "[422]"       422
--   contains "[40300]"     403 {"errors":[{"code":"40300",…}]}: the number blocked the sender
--   contains "[timeout]"   never answers (the connection is held open)
--   anything else          200 {"data":{"id":"fake-N","to":[{"status":"queued"}]}}
-- and a message to a number listed in the file BLOCKED (one a line, read at
-- each request; optional) gets the 40300 answer too, whatever its text.
-- The file CHAOS (optional, read at each request) may hold the lines
-- "every429=N", "every500=M" and "retry_after=S": then of the requests that
-- would get 200, every N-th gets 429 with Retry-After S (default 0) and
-- every M-th 500; and "delay_ms=D": every answer goes out D milliseconds
-- after its request was read (other requests are read and answered
-- meanwhile), so that calls are in flight at any moment.
-- Every request is appended to LOG as one JSON line
-- {"path":…,"authorization":…,"body":{…},"answer":STATUS,"at":SECONDS}.
local socket = require "socket"
local cjson = require "cjson.safe"

local port, log_path, blocked_path, chaos_path = tonumber(arg[1]), arg[2], arg[3], arg[4]
local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0.05)

local held, failed_once, n, plain = {}, {}, 0, 0
local delayed = {} -- answers waiting for their time: { c, at, status, reply, extra }

local function log(entry)
    local f = assert(io.open(log_path, "a"))
    f:write(cjson.encode(entry), "\n")
    f:close()
end

-- True when the number is listed in the BLOCKED file.
local function blocked(number)
    local f = blocked_path and io.open(blocked_path)
    if not f then return false end
    for line in f:lines() do
        if line == number then
            f:close()
            return true
        end
    end
    f:close()
    return false
end

-- The CHAOS file's settings.
local function chaos()
    local t = {}
    local f = chaos_path and io.open(chaos_path)
    if not f then return t end
    for line in f:lines() do
        local k, v = line:match("^([%w_]+)=([%d.]+)$")
        if k then t[k] = tonumber(v) end
    end
    f:close()
    return t
end

local BLOCKED_ANSWER <const> = '{"errors":[{"code":"40300","title":"Blocked due to STOP message",'
    .. '"detail":"Messages cannot be sent from this number to the destination number."}]}'

local function read_request(c)
    c:settimeout(5)
    local line = c:receive("*l")
    if not line then return nil end
    local method, path = line:match("^(%u+) (%S+)")
    local headers = {}
    while true do
        local h = c:receive("*l")
        if not h or h == "" then break end
        local k, v = h:match("^([^:]+):%s*(.*)$")
        if k then headers[k:lower()] = v end
    end
    local body = ""
    local len = tonumber(headers["content-length"] or "0")
    if len and len > 0 then body = c:receive(len) or "" end
    return { method = method, path = path, headers = headers, body = body }
end

local function answer(c, status, body, extra)
    c:send(string.format("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        .. "%sConnection: close\r\n\r\n%s", status, #body, extra or "", body))
    c:close()
end

-- Sends the delayed answers whose time has come; returns how long until
-- the next one (seconds), or nil when none waits.
local function answer_due()
    local now, next_at = socket.gettime(), nil
    local i = 1
    while i <= #delayed do
        local d = delayed[i]
        if d.at <= now then
            answer(d.c, d.status, d.reply, d.extra)
            table.remove(delayed, i)
        else
            next_at = math.min(next_at or d.at, d.at)
            i = i + 1
        end
    end
    return next_at and next_at - now
end

while true do
    local wait = answer_due()
    server:settimeout(wait and math.min(wait, 0.05) or 0.05)
    local c = server:accept()
    if c then
        local req = read_request(c)
        if req then
            local decoded = cjson.decode(req.body) or {}
            local text = type(decoded) == "table" and decoded.text or ""
            local status, reply, extra = 200, nil, nil
            local ch = chaos()
            if type(text) ~= "string" then text = "" end
            if req.method ~= "POST" or req.path ~= "/v2/messages" then
                status, reply = 404, '{"errors":[{"title":"not found"}]}'
            elseif text:find("[timeout]", 1, true) then
                status = 0
            elseif text:find("[40300]", 1, true) or blocked(type(decoded) == "table" and decoded.to) then
                status, reply = 403, BLOCKED_ANSWER
            elseif text:find("[422]", 1, true) then
                status, reply = 422, '{"errors":[{"title":"invalid"}]}'
            elseif text:find("[500-once]", 1, true) and not failed_once[text] then
                failed_once[text] = true
                status, reply = 500, '{"errors":[{"title":"boom"}]}'
            else
                plain = plain + 1
                if ch.every429 and plain % ch.every429 == 0 then
                    status, reply = 429, '{"errors":[{"code":"10011","title":"Too many requests"}]}'
                    extra = string.format("Retry-After: %s\r\n", ch.retry_after or 0)
                elseif ch.every500 and plain % ch.every500 == 0 then
                    status, reply = 500, '{"errors":[{"title":"boom"}]}'
                else
                    n = n + 1
                    reply = string.format('{"data":{"id":"fake-%d","to":[{"status":"queued"}]}}', n)
                end
            end
            log { path = req.path, authorization = req.headers["authorization"], body = decoded, answer = status,
                  at = socket.gettime() }
            if status == 0 then
                held[#held + 1] = c -- kept open (and referenced) until many pile up
                if #held > 100 then
                    for _, h in ipairs(held) do h:close() end
                    held = {}
                end
            elseif (ch.delay_ms or 0) > 0 then
                delayed[#delayed + 1] = { c = c, at = socket.gettime() + ch.delay_ms / 1000, status = status,
                                          reply = reply, extra = extra }
            else
                answer(c, status, reply, extra)
            end
        else
            c:close()
        end
    end
end
