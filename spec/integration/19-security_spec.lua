-- Security checks over the public routes: one church's token never reaches
-- another church's rows, responses name no server software, and error
-- bodies hold no internal names.
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")

local HOOK <const> = "/api/webhooks/telnyx/messaging"

-- Words that would reveal how steeple is built.
local INTERNAL <const> = { "registry", "tenant_", "postgres", "sql", "lua", "steeple", "traceback", "stack",
    "select ", "insert ", "libpq", "evhttp", "cjson", "%.c:", "%.lua:" }

local function leaks(text)
    local lower = text:lower()
    for _, word in ipairs(INTERNAL) do
        if lower:find(word) then return word end
    end
    return nil
end

describe("security", function()
    local reg, tx
    local a, b -- { token, tenant, conversation, admin }
    local srv = suite.server(function()
        reg = auth.registry("secspec")
        tx = telnyx.new()
        return {
            config = { limits = { request_timeout_s = 30 } },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key },
        }
    end, { stop_s = 10, mark = false, after = function() reg:drop() end })

    local function church(name, number)
        local res = auth.post(srv, "/api/auth/register", auth.church(name, { phoneNumber = number }))
        assert.equal(201, res.status, res.body)
        local token = res.json.accessToken
        tx:deliver(srv, telnyx.received("sec-" .. name, "+15556000" .. number:sub(-3), number), function()
            return auth.get(srv, "/api/conversations", token).json.conversations[1] ~= nil
        end)
        local conv = auth.get(srv, "/api/conversations", token).json.conversations[1].id
        return { token = res.json.accessToken, tenant = res.json.tenantId, conversation = conv, admin = res.json.admin }
    end

    setup(function()
        a = church("seca", "+15556100001")
        b = church("secb", "+15556100002")
    end)

    it("never lets one church's token reach another church's rows", function()
        local bearer = { Authorization = "Bearer " .. a.token }
        local function get(path) return auth.get(srv, path, a.token) end
        -- B's conversation by id, through every route that takes one
        assert.equal(404, get("/api/conversations/" .. b.conversation .. "/messages").status)
        assert.equal(404, auth.post(srv, "/api/conversations/" .. b.conversation .. "/messages", { text = "x" },
            bearer).status)
        -- lists hold A's rows only
        local convs = get("/api/conversations").json.conversations
        assert.equal(1, #convs)
        assert.equal(a.conversation, convs[1].id)
        local admins = get("/api/admins").json.admins
        assert.equal(1, #admins)
        assert.equal(a.admin.id, admins[1].id)
        local me = get("/api/me").json
        assert.equal(a.tenant, me.tenantId)
        assert.equal(a.admin.email, me.admin.email)
        -- B's refresh token cannot be ended with A's session
        local b_session = auth.post(srv, "/api/auth/login", { email = b.admin.email, password = "password of church secb" }).json
        assert.equal(204, auth.post(srv, "/api/auth/logout", { refreshToken = b_session.refreshToken }, bearer).status)
        assert.equal(200, auth.post(srv, "/api/auth/refresh", { refreshToken = b_session.refreshToken }).status)
    end)

    it("names no server software in any response", function()
        local responses = {
            http.request { port = srv.port, path = "/health" },
            http.request { port = srv.port, path = "/nope" },
            http.request { port = srv.port, method = "DELETE", path = "/health" },
            auth.get(srv, "/api/me", a.token),
            auth.get(srv, "/api/me"),
        }
        for _, res in ipairs(responses) do
            assert.is_nil(res.headers["server"], "Server: " .. tostring(res.headers["server"]))
            assert.is_nil(res.headers["x-powered-by"])
        end
    end)

    it("keeps internal names out of every error body", function()
        local bearer = { Authorization = "Bearer " .. a.token }
        local bodies = {
            http.request({ port = srv.port, path = "/nope" }).body,
            http.request({ port = srv.port, method = "PUT", path = "/api/me" }).body,
            auth.post(srv, "/api/auth/register", "{}", { ["Content-Type"] = "text/plain" }).body,
            auth.post(srv, "/api/auth/register", "not json").body,
            auth.post(srv, "/api/auth/register", {}).body,
            auth.post(srv, "/api/auth/register", auth.church("seca")).body, -- email taken
            auth.post(srv, "/api/auth/login", { email = "x@example.org", password = "wrong password" }).body,
            auth.get(srv, "/api/me", "garbage").body,
            auth.post(srv, "/api/admins", { email = "z@example.org", password = "long enough password", name = "Z",
                role = "root" }, bearer).body,
            auth.get(srv, "/api/conversations?limit=0", a.token).body,
            auth.get(srv, "/api/conversations/'%20OR%201=1--/messages", a.token).body,
            tx:post(srv, HOOK, "{}", { ["Content-Type"] = "application/json" }).body,
            tx:post(srv, HOOK, '{"data":{"event_type":"message.received","payload":{"id":"x","to":[]}}}').body,
        }
        for i, body in ipairs(bodies) do
            assert.truthy(body:find('"requestId"', 1, true), i .. ": " .. body)
            local word = leaks(body)
            assert.is_nil(word, i .. ": '" .. tostring(word) .. "' in " .. body)
        end
        -- an id made of SQL is just not found, and reaches no SQL text
        local sql_id = "'; DROP TABLE tenants; --"
        local res = auth.get(srv, "/api/conversations/" .. sql_id:gsub("[^%w]", function(c)
            return string.format("%%%02X", c:byte()) end) .. "/messages", a.token)
        assert.equal(404, res.status)
        assert.equal("1", (pg.psql(reg.url, "SELECT count(*) FROM pg_tables WHERE tablename = 'tenants'")))
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
