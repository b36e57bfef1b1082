-- Pathological input: every field a client controls (bodies, query strings,
-- headers, webhook fields), sent as a value of about 1 MiB made of what slows
-- a backtracking pattern down (a long run of white space inside a value, a
-- long run of the pattern's own character class), gets its answer at once.
-- One worker serves it all: the worker is never restarted, and GET /health on
-- that same worker keeps answering while each request is handled.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")

local rep = string.rep

local MIB <const> = 1024 * 1024
-- a JSON value this long fits the raised body limit; a header or query
-- value this long fits the raised header limit with the request's other lines
local VALUE <const> = MIB
local HEADER_VALUE <const> = MIB - 8192
local HOOK <const> = "/api/webhooks/telnyx/messaging"
local CHURCH_PHONE <const> = "+15558200001"
local CONTACT_PHONE <const> = "+15558200002"

-- The request deadline is far above what a bounded request needs; the
-- watchdog ends a worker stuck in C some 5 s after it. /health must answer
-- well within that.
local REQUEST_TIMEOUT_S <const> = server.slow(10)
local HEALTH_TIMEOUT_S <const> = server.slow(5)

-- "a", n - 2 spaces, "b": a trimming pattern's worst case.
local function spaces_inside(n) return "a" .. rep(" ", n - 2) .. "b" end
-- n characters of the class c.
local function run_of(c, n) return rep(c, n // #c) end

describe("pathological input", function()
    local reg, tx
    local token, refresh, conversation
    local srv = suite.server(function()
        reg = auth.registry("pathspec")
        tx = telnyx.new()
        return {
            config = {
                workers = 1,
                limits = { request_timeout_s = REQUEST_TIMEOUT_S, body_bytes = 4 * MIB, header_bytes = MIB },
                auth = { trusted_proxies = "127.0.0.1" },
            },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key,
                    -- on, so that every auth request works out its client address
                    STEEPLE_AUTH_RATE_PER_MIN = "1000000" },
        }
    end, { stop_s = 10, mark = false, after = function() reg:drop() end })

    local function json_post(path, body, headers)
        local h = { ["Content-Type"] = "application/json" }
        for k, v in pairs(headers or {}) do h[k] = v end
        return { port = srv.port, method = "POST", path = path, headers = h, timeout = server.slow(30),
                 body = type(body) == "string" and body or cjson.encode(body) }
    end

    local function bearer(extra)
        local h = { Authorization = "Bearer " .. token }
        for k, v in pairs(extra or {}) do h[k] = v end
        return h
    end

    local function get(path, headers)
        return { port = srv.port, path = path, headers = headers or bearer(), timeout = server.slow(30) }
    end

    local function with(base, field, value)
        local out = {}
        for k, v in pairs(base) do out[k] = v end
        if field ~= nil then out[field] = value end
        return out
    end

    local function registration(field, value)
        return json_post("/api/auth/register", with(auth.church("path"), field, value))
    end

    local function login(field, value, headers)
        local body = { email = "nobody@example.org", password = "whatever password" }
        return json_post("/api/auth/login", with(body, field, value), headers)
    end

    local function new_admin(field, value)
        local body = { email = "second.admin@example.org", password = "another password", name = "Second" }
        return json_post("/api/admins", with(body, field, value), bearer())
    end

    -- A signed message.received event; payload and data (tables) replace its fields.
    local function event(payload, data)
        local d = {
            id = "ev-path", event_type = "message.received",
            payload = { id = "pm-path", from = { phone_number = CONTACT_PHONE },
                        to = { { phone_number = CHURCH_PHONE } }, text = "hello" },
        }
        for k, v in pairs(payload or {}) do d.payload[k] = v end
        for k, v in pairs(data or {}) do d[k] = v end
        local body = cjson.encode { data = d }
        return { port = srv.port, method = "POST", path = HOOK, body = body, headers = tx:headers(body),
                 timeout = server.slow(30) }
    end

    local function signed_with(header, value)
        local spec = event()
        spec.headers[header] = value
        return spec
    end

    -- Sends the request while another client polls GET /health on the same
    -- server. Returns the response (or nil, error) and the polls' answers.
    local function alongside_health(spec)
        local done = false
        local results = http.run({
            function()
                local res, err = http.request(spec)
                done = true
                return { res = res, err = err }
            end,
            function()
                local polls = {}
                repeat
                    local res, err = http.request { port = srv.port, path = "/health", timeout = HEALTH_TIMEOUT_S }
                    polls[#polls + 1] = res and res.status or err
                    http.sleep(0.05)
                until done
                return polls
            end,
        }, server.slow(120))
        assert(results[1].ok, results[1].err)
        assert(results[2].ok, results[2].err)
        return results[1].value.res, results[1].value.err, results[2].value
    end

    setup(function()
        local res = auth.post(srv, "/api/auth/register", auth.church("pathowner", { phoneNumber = CHURCH_PHONE }))
        assert.equal(201, res.status, res.body)
        token, refresh = res.json.accessToken, res.json.refreshToken
        local hook = tx:post(srv, HOOK, telnyx.received("pm-path-first", CONTACT_PHONE, CHURCH_PHONE, "first"))
        assert.equal(200, hook.status, hook.body)
        conversation = auth.get(srv, "/api/conversations", token).json.conversations[1].id
    end)

    before_each(function()
        -- one worker, answering (so that a case the watchdog ended its worker
        -- in does not fail the next one too)
        assert.truthy(server.wait_until(function() return #srv:worker_pids() == 1 and srv:wait_ready(1) end, 30))
        srv:mark()
    end)

    -- name, request spec builder, expected status, expected error code (nil: no error body)
    local CASES = {
        -- POST /api/auth/register
        { "register churchName: spaces inside", function() return registration("churchName", spaces_inside(VALUE)) end,
          400, "validation_failed" },
        { "register churchName: letters", function() return registration("churchName", run_of("a", VALUE)) end,
          400, "validation_failed" },
        { "register email: spaces inside",
          function() return registration("email", "a" .. rep(" ", VALUE) .. "b@x.example") end,
          400, "validation_failed" },
        { "register email: spaces around",
          function() return registration("email", rep(" ", VALUE // 2) .. "a@x.example" .. rep(" ", VALUE // 2)) end,
          400, "validation_failed" },
        { "register email: local part", function() return registration("email", run_of("a", VALUE) .. "@x.example") end,
          400, "validation_failed" },
        { "register email: domain", function() return registration("email", "a@" .. run_of("a", VALUE) .. ".example") end,
          400, "validation_failed" },
        { "register email: dotted domain", function() return registration("email", "a@" .. run_of("a.", VALUE) .. "aa") end,
          400, "validation_failed" },
        { "register password", function() return registration("password", run_of("a", VALUE)) end,
          400, "validation_failed" },
        { "register adminName: spaces inside", function() return registration("adminName", spaces_inside(VALUE)) end,
          400, "validation_failed" },
        { "register adminName: tabs and newlines inside",
          function() return registration("adminName", "a" .. run_of("\t\n ", VALUE) .. "b") end,
          400, "validation_failed" },
        { "register phoneNumber: digits", function() return registration("phoneNumber", "+" .. run_of("1", VALUE)) end,
          400, "validation_failed" },
        { "register phoneNumber: spaces inside", function() return registration("phoneNumber", spaces_inside(VALUE)) end,
          400, "validation_failed" },
        -- POST /api/auth/login
        { "login email: spaces inside", function() return login("email", "a" .. rep(" ", VALUE) .. "b@x.example") end,
          400, "validation_failed" },
        { "login email: local part", function() return login("email", run_of("a", VALUE) .. "@x.example") end,
          400, "validation_failed" },
        { "login password", function() return login("password", run_of("a", VALUE)) end, 400, "validation_failed" },
        { "login password: spaces inside", function() return login("password", spaces_inside(VALUE)) end,
          400, "validation_failed" },
        -- POST /api/auth/refresh and /api/auth/logout
        { "refresh refreshToken: spaces inside",
          function() return json_post("/api/auth/refresh", { refreshToken = spaces_inside(VALUE) }) end,
          400, "validation_failed" },
        { "refresh refreshToken: token characters",
          function() return json_post("/api/auth/refresh", { refreshToken = run_of("a", VALUE) }) end,
          400, "validation_failed" },
        { "logout refreshToken: spaces inside",
          function() return json_post("/api/auth/logout", { refreshToken = spaces_inside(VALUE) }, bearer()) end,
          400, "validation_failed" },
        { "logout refreshToken: token characters",
          function() return json_post("/api/auth/logout", { refreshToken = run_of("a-", VALUE) }, bearer()) end,
          400, "validation_failed" },
        -- POST /api/admins
        { "admins email: spaces inside", function() return new_admin("email", "a" .. rep(" ", VALUE) .. "b@x.example") end,
          400, "validation_failed" },
        { "admins email: domain", function() return new_admin("email", "a@" .. run_of("a-", VALUE) .. ".example") end,
          400, "validation_failed" },
        { "admins password", function() return new_admin("password", run_of("a", VALUE)) end, 400, "validation_failed" },
        { "admins name: spaces inside", function() return new_admin("name", spaces_inside(VALUE)) end,
          400, "validation_failed" },
        { "admins role", function() return new_admin("role", run_of("a", VALUE)) end, 400, "validation_failed" },
        -- POST /api/conversations/{id}/messages
        { "messages text: spaces inside",
          function() return json_post("/api/conversations/" .. conversation .. "/messages",
              { text = spaces_inside(VALUE) }, bearer()) end,
          400, "validation_failed" },
        { "messages mediaUrls: URL characters",
          function() return json_post("/api/conversations/" .. conversation .. "/messages",
              { mediaUrls = { "https://" .. run_of("a", VALUE) } }, bearer()) end,
          400, "validation_failed" },
        { "messages mediaUrls: spaces inside",
          function() return json_post("/api/conversations/" .. conversation .. "/messages",
              { mediaUrls = { "https://a" .. rep(" ", VALUE) .. "b" } }, bearer()) end,
          400, "validation_failed" },
        -- contacts and lists
        { "contacts firstName: spaces inside",
          function() return json_post("/api/contacts", { phoneNumber = "+15558200003", firstName = spaces_inside(VALUE) },
              bearer()) end,
          400, "validation_failed" },
        { "contacts phoneNumber: digits",
          function() return json_post("/api/contacts", { phoneNumber = "+" .. run_of("1", VALUE) }, bearer()) end,
          400, "validation_failed" },
        { "contacts lists: id characters",
          function() return json_post("/api/contacts", { phoneNumber = "+15558200003", lists = { run_of("a-", VALUE) } },
              bearer()) end,
          400, "validation_failed" },
        { "contacts lists: many items",
          function()
              local ids = {}
              for i = 1, VALUE // 40 do ids[i] = "00000000-0000-4000-8000-000000000000" end
              return json_post("/api/contacts", { phoneNumber = "+15558200003", lists = ids }, bearer())
          end,
          400, "validation_failed" },
        { "contacts q: letters", function() return get("/api/contacts?q=" .. run_of("a", HEADER_VALUE)) end,
          400, "validation_failed" },
        { "contacts q: escaped spaces", function() return get("/api/contacts?q=" .. run_of("%20", HEADER_VALUE)) end,
          400, "validation_failed" },
        { "lists keyword: letters",
          function() return json_post("/api/lists", { name = "x", keyword = run_of("a", VALUE) }, bearer()) end,
          400, "validation_failed" },
        { "lists name: spaces inside",
          function() return json_post("/api/lists", { name = spaces_inside(VALUE) }, bearer()) end,
          400, "validation_failed" },
        { "messages path id", function() return get("/api/conversations/" .. run_of("a", HEADER_VALUE) .. "/messages") end,
          404, "not_found" },
        -- query parameters
        { "limit: spaces, then a number",
          function() return get("/api/conversations?limit=" .. run_of("+", HEADER_VALUE) .. "5") end,
          400, "validation_failed" },
        { "limit: digits", function() return get("/api/conversations?limit=" .. run_of("1", HEADER_VALUE)) end,
          400, "validation_failed" },
        { "limit: escaped spaces",
          function() return get("/api/conversations/" .. conversation .. "/messages?limit=" .. run_of("%20", HEADER_VALUE)) end,
          400, "validation_failed" },
        { "cursor: base64url characters",
          function() return get("/api/conversations?cursor=" .. run_of("A", HEADER_VALUE)) end,
          400, "validation_failed" },
        { "cursor: escaped spaces",
          function() return get("/api/conversations/" .. conversation .. "/messages?cursor=" .. run_of("%20", HEADER_VALUE)) end,
          400, "validation_failed" },
        { "query: separators only", function() return get("/api/conversations?" .. run_of("&", HEADER_VALUE)) end, 200 },
        -- the Telnyx webhook (signed)
        { "webhook text: spaces inside", function() return event { text = spaces_inside(VALUE) } end,
          400, "validation_failed" },
        { "webhook payload id", function() return event { id = run_of("a", VALUE) } end, 400, "validation_failed" },
        { "webhook to: digits",
          function() return event { to = { { phone_number = "+" .. run_of("1", VALUE) } } } end,
          400, "validation_failed" },
        { "webhook from: spaces inside",
          function() return event { from = { phone_number = spaces_inside(VALUE) } } end, 400, "validation_failed" },
        { "webhook media url",
          function() return event { media = { { url = "https://" .. run_of("a", VALUE) } } } end,
          400, "validation_failed" },
        { "webhook event type", function() return event(nil, { event_type = run_of("a", VALUE) }) end, 200 },
        { "webhook event id", function() return event(nil, { id = run_of("a", VALUE), event_type = "call.initiated" }) end,
          200 },
        { "webhook timestamp: digits", function() return signed_with("telnyx-timestamp", run_of("1", HEADER_VALUE)) end,
          401, "invalid_signature" },
        { "webhook signature: base64 characters",
          function() return signed_with("telnyx-signature-ed25519", run_of("A", HEADER_VALUE)) end,
          401, "invalid_signature" },
        -- headers
        { "X-Forwarded-For: spaces inside a hop",
          function() return login(nil, nil, { ["X-Forwarded-For"] = "198.51.100.1" .. rep(" ", HEADER_VALUE) .. "9" }) end,
          401, "invalid_credentials" },
        { "X-Forwarded-For: spaces between hops",
          function()
              return login(nil, nil, { ["X-Forwarded-For"] = "198.51.100.1," .. rep(" ", HEADER_VALUE) .. "198.51.100.2" })
          end, 401, "invalid_credentials" },
        { "X-Forwarded-For: empty hops",
          function() return login(nil, nil, { ["X-Forwarded-For"] = run_of(", ", HEADER_VALUE) .. "198.51.100.3" }) end,
          401, "invalid_credentials" },
        { "X-Forwarded-For: address characters",
          function() return login(nil, nil, { ["X-Forwarded-For"] = run_of("1.", HEADER_VALUE) .. "1" }) end,
          401, "invalid_credentials" },
        { "X-Request-Id: id characters",
          function() return login(nil, nil, { ["X-Request-Id"] = run_of("a", HEADER_VALUE) }) end,
          401, "invalid_credentials" },
        { "Authorization: spaces inside",
          function() return get("/api/me", { Authorization = "Bearer " .. rep(" ", HEADER_VALUE) .. "x" }) end,
          401, "unauthorized" },
        { "Authorization: token characters",
          function() return get("/api/me", { Authorization = "Bearer " .. run_of("a.", HEADER_VALUE) }) end,
          401, "unauthorized" },
        { "Content-Type: spaces around",
          function()
              return login(nil, nil,
                  { ["Content-Type"] = rep(" ", HEADER_VALUE // 2) .. "application/json" .. rep(" ", HEADER_VALUE // 2) .. "x" })
          end, 415, "unsupported_media_type" },
    }

    for _, case in ipairs(CASES) do
        local name, build, status, code = case[1], case[2], case[3], case[4]
        it(name .. ": " .. status .. " at once, the worker keeps serving", function()
            local pids = srv:worker_pids()
            assert.equal(1, #pids)
            local res, err, polls = alongside_health(build())
            assert.is_table(res, "no answer: " .. tostring(err))
            assert.equal(status, res.status, res.body and res.body:sub(1, 300))
            if code then
                assert.equal(code, res.json and res.json.error and res.json.error.code)
            end
            assert.truthy(#res.headers["x-request-id"] <= 64)
            assert.truthy(#polls >= 1)
            for i, p in ipairs(polls) do assert.equal(200, p, "GET /health #" .. i .. " failed") end
            assert.same(pids, srv:worker_pids())
            assert.same({}, srv:unexpected_errors())
        end)
    end

    it("still serves the owner after all of that", function()
        assert.equal(200, auth.get(srv, "/api/me", token).status)
        local res = auth.post(srv, "/api/auth/refresh", { refreshToken = refresh })
        assert.equal(200, res.status, res.body)
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
