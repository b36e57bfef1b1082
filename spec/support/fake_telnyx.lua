-- A fake Telnyx messaging API for the specs (plain HTTP on 127.0.0.1):
--
--   lua5.4 spec/support/fake_telnyx.lua PORT LOG
--
-- POST /v2/messages answers by the message text:
--   contains "[500-once]"  500 the first time for that text, then like any other
--   contains "[422]"       422
--   contains "[timeout]"   never answers (the connection is held open)
--   anything else          200 {"data":{"id":"fake-N","to":[{"status":"queued"}]}}
-- Every request is appended to LOG as one JSON line
-- {"path":…,"authorization":…,"body":{…},"answer":STATUS}.
local socket = require "socket"
local cjson = require "cjson.safe"

local port, log_path = tonumber(arg[1]), arg[2]
local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0.05)

local held, failed_once, n = {}, {}, 0

local function log(entry)
    local f = assert(io.open(log_path, "a"))
    f:write(cjson.encode(entry), "\n")
    f:close()
end

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

local function answer(c, status, body)
    c:send(string.format("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        .. "Connection: close\r\n\r\n%s", status, #body, body))
    c:close()
end

while true do
    local c = server:accept()
    if c then
        local req = read_request(c)
        if req then
            local decoded = cjson.decode(req.body) or {}
            local text = type(decoded) == "table" and decoded.text or ""
            local status, reply = 200, nil
            if type(text) ~= "string" then text = "" end
            if req.method ~= "POST" or req.path ~= "/v2/messages" then
                status, reply = 404, '{"errors":[{"title":"not found"}]}'
            elseif text:find("[timeout]", 1, true) then
                status = 0
            elseif text:find("[422]", 1, true) then
                status, reply = 422, '{"errors":[{"title":"invalid"}]}'
            elseif text:find("[500-once]", 1, true) and not failed_once[text] then
                failed_once[text] = true
                status, reply = 500, '{"errors":[{"title":"boom"}]}'
            else
                n = n + 1
                reply = string.format('{"data":{"id":"fake-%d","to":[{"status":"queued"}]}}', n)
            end
            log { path = req.path, authorization = req.headers["authorization"], body = decoded, answer = status }
            if status == 0 then
                held[#held + 1] = c -- kept open (and referenced) until many pile up
                if #held > 100 then
                    for _, h in ipairs(held) do h:close() end
                    held = {}
                end
            else
                answer(c, status, reply)
            end
        else
            c:close()
        end
    end
end
