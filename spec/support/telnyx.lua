-- Telnyx's side of the webhooks for the specs: an Ed25519 key pair (openssl),
-- signed requests and v2 event bodies.
--
--   local tx = telnyx.new()          a fresh key pair; tx.public_key (base64)
--   tx:headers(body [, ts])          the signature headers for body (ts: unix seconds, default now)
--   telnyx.received(id, from, to [, text, media])   a message.received body (JSON text)
--   telnyx.status(event_type, id, from, status)     a message.sent/delivered/finalized body
--   tx:post(srv, path, body [, headers])            a signed POST to a webhook path
--   telnyx.accepted(res [, also])   true for 200 stored (or 200 `also`) and for 202
--       spooled: a webhook whose database work took longer than spool.after_ms
--       (a busy machine) is spooled and applied later, which is the contract
--   tx:deliver(srv, body, landed)   a signed POST to the messaging webhook that
--       must be accepted; then waits (30 s at most) until landed() is true
--   telnyx.start_fake(port, log [, blocked, chaos])  starts the fake Telnyx API
--       (support/fake_telnyx.lua, whose header tells its files) in the
--       background; returns its pid
local server = require "support.server"
local http = require "support.http"
local cjson = require "cjson"
local secrets = require "support.secrets"

local M = {}

function M.start_fake(port, log, blocked, chaos)
    local args = { tostring(port), server.quote(log) }
    if blocked then args[#args + 1] = server.quote(blocked) end
    if chaos then args[#args + 1] = server.quote(chaos) end
    local p = io.popen(string.format("cd %s && lua5.4 spec/support/fake_telnyx.lua %s >/dev/null 2>&1 & echo $!",
        server.quote(server.ROOT), table.concat(args, " ")))
    local pid = tonumber(p:read("a"):match("%d+"))
    p:close()
    return pid
end

local shell = server.capture

local Telnyx = {}
Telnyx.__index = Telnyx

function M.new()
    local dir = server.tmpdir()
    local key = dir .. "/key.pem"
    shell("openssl genpkey -algorithm ed25519 -out " .. server.quote(key) .. " 2>/dev/null")
    local public_key = shell("openssl pkey -in " .. server.quote(key) .. " -pubout -outform DER | tail -c 32 | base64")
    return setmetatable({ dir = dir, key = key, public_key = (public_key:gsub("%s", "")), n = 0 }, Telnyx)
end

function Telnyx:sign(text)
    self.n = self.n + 1
    local path = self.dir .. "/msg" .. self.n
    server.write_file(path, text)
    local sig = shell(string.format("openssl pkeyutl -sign -inkey %s -rawin -in %s | base64 -w0",
        server.quote(self.key), server.quote(path)))
    os.remove(path)
    return (sig:gsub("%s", ""))
end

function Telnyx:headers(body, ts)
    ts = tostring(ts or os.time())
    return {
        ["Content-Type"] = "application/json",
        ["telnyx-timestamp"] = ts,
        ["telnyx-signature-ed25519"] = self:sign(ts .. "|" .. body),
    }
end

function Telnyx:post(srv, path, body, headers)
    return assert(http.request { port = srv.port, method = "POST", path = path, body = body, timeout = 30,
        headers = headers or self:headers(body) })
end

local seq = 0
local function event_id()
    seq = seq + 1
    return string.format("ev-%d-%d", os.time(), seq)
end

function M.accepted(res, also)
    local status = type(res.json) == "table" and res.json.status
    return (res.status == 200 and (status == "stored" or status == also))
        or (res.status == 202 and status == "spooled")
end

-- also: another accepted status besides "stored" (a status event answers
-- "updated").
function Telnyx:deliver(srv, body, landed, also)
    local res = self:post(srv, "/api/webhooks/telnyx/messaging", body)
    assert(M.accepted(res, also), "webhook answered " .. tostring(res.status) .. " " .. tostring(res.body))
    assert(server.wait_until(landed, 30), "an accepted webhook never landed")
    return res
end

function M.received(id, from, to, text, media)
    secrets.add(text)
    return cjson.encode {
        data = {
            id = event_id(), event_type = "message.received", occurred_at = "2026-11-29T12:00:00Z",
            payload = {
                id = id, from = { phone_number = from }, to = { { phone_number = to } },
                text = text or ("hello from " .. from), media = media,
            },
        },
        meta = { attempt = 1 },
    }
end

function M.status(event_type, id, from, status)
    return cjson.encode {
        data = {
            id = event_id(), event_type = event_type, occurred_at = "2026-11-29T12:00:00Z",
            payload = { id = id, from = { phone_number = from }, to = { { phone_number = "+15550001111", status = status } } },
        },
        meta = { attempt = 1 },
    }
end

return M
