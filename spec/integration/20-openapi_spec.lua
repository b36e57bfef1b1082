-- lua/openapi.json against the running server: GET /openapi.json serves it;
-- for each operation below, every status the document lists is driven and
-- seen (but those of NOT_DRIVEN), no answer has a status the document does
-- not list for its operation, every JSON body fits the schema documented for
-- its status (error bodies and their codes included), and the headers the
-- document marks required are there.
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local schema = require "support.schema"
local secrets = require "support.secrets"
local cjson = require "cjson"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql = pg.psql

local DOC_TEXT = assert(server.read_file(server.ROOT .. "/lua/openapi.json"))
local DOC = cjson.decode(DOC_TEXT)
local checker = schema.new(DOC)

local BODY_LIMIT <const> = 8192
local RATE_PER_MIN <const> = 2
local HOOKS <const> = { "/api/webhooks/telnyx/messaging", "/api/webhooks/telnyx/mms" }

-- Documented statuses this spec does not drive, and why.
local NOT_DRIVEN <const> = {
    ["*"] = { ["500"] = "an unexpected failure in a handler (spec 02 drives it through test routes)" },
    ["GET /ready"] = { ["503"] = "the registry down (spec 08)" },
    ["POST /api/auth/register"] = { ["503"] = "only service_unavailable: a database down or the hashing queue full" },
    ["POST /api/webhooks/telnyx/messaging"] = { ["503"] = "the databases down and the spool disk full (the fault suite)" },
    ["POST /api/webhooks/telnyx/mms"] = { ["503"] = "the databases down and the spool disk full (the fault suite)" },
}

local seen = {} -- "METHOD /pattern" -> { [status] = true }

local function media_type(res)
    return ((res.headers["content-type"] or ""):match("^%s*([^;%s]+)") or ""):lower()
end

-- The documented response of an operation for a status, or fails.
local function documented(key, status)
    local method, pattern = key:match("^(%u+) (.+)$")
    local item = assert(DOC.paths[pattern], "no path " .. pattern .. " in the document")
    local operation = assert(item[method:lower()], "no operation " .. key .. " in the document")
    local response = operation.responses[tostring(status)]
    assert(response, key .. " answered " .. status .. ", which the document does not list")
    return checker:resolve(response)
end

-- Checks one answer of operation key against the document and records its status.
local function observe(key, res)
    local response = documented(key, res.status)
    for name, header in pairs(response.headers or {}) do
        if checker:resolve(header).required then
            assert(res.headers[name:lower()], key .. " " .. res.status .. ": no " .. name .. " header")
        end
    end
    if response.content then
        local mt = media_type(res)
        local media
        for documented_type, m in pairs(response.content) do
            if documented_type:match("^[^;%s]+"):lower() == mt then media = m end
        end
        assert(media, key .. " " .. res.status .. ": content type " .. mt .. " is not documented")
        if mt == "application/json" then
            assert(res.json, key .. " " .. res.status .. ": the body is not JSON: " .. tostring(res.body))
            local ok, errs = checker:check(res.json, media.schema)
            assert(ok, key .. " " .. res.status .. ": " .. table.concat(errs or {}, "; ") .. "\n" .. res.body)
        end
    end
    seen[key] = seen[key] or {}
    seen[key][tostring(res.status)] = true
    return res
end

-- The statuses of operation key that the document lists, less NOT_DRIVEN.
local function to_drive(key)
    local method, pattern = key:match("^(%u+) (.+)$")
    local out = {}
    for status in pairs(DOC.paths[pattern][method:lower()].responses) do
        local skip = NOT_DRIVEN["*"][status] or (NOT_DRIVEN[key] or {})[status]
        if not skip then out[#out + 1] = status end
    end
    table.sort(out)
    return out
end

local function assert_all_seen(key)
    local got = {}
    for status in pairs(seen[key] or {}) do got[#got + 1] = status end
    table.sort(got)
    assert.same(to_drive(key), got, key)
end

local address_seq = 0
-- A client address of its own: /api/auth/* is rate limited per address, and
-- the server believes X-Forwarded-For from 127.0.0.1 here.
local function fresh_address()
    address_seq = address_seq + 1
    return string.format("198.18.%d.%d", address_seq // 250, address_seq % 250 + 1)
end

describe("openapi.json against the server", function()
    local reg, srv, tx
    local owner, suspended, member, conversation_id -- fixtures of setup()

    -- The owner's church database.
    local function url_of_owner()
        return pg.url_of((psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. owner.tenant .. "'")))
    end

    -- One request of operation key. opts: method/path come from key unless
    -- opts.path is given (a concrete path); body (table or text), token,
    -- content_type (default application/json for a body), headers, address,
    -- source (the local address to connect from).
    local function call(key, opts)
        opts = opts or {}
        local method, pattern = key:match("^(%u+) (.+)$")
        local headers = { ["X-Forwarded-For"] = opts.address or fresh_address() }
        local body = opts.body
        if type(body) == "table" then body = cjson.encode(body) end
        if body then headers["Content-Type"] = opts.content_type or "application/json" end
        if opts.token then headers.Authorization = "Bearer " .. opts.token end
        for k, v in pairs(opts.headers or {}) do headers[k] = v end
        local res = assert(http.request { port = srv.port, method = method, path = opts.path or pattern,
            headers = headers, body = body, timeout = 60, source = opts.source })
        if type(res.json) == "table" then secrets.add(res.json.accessToken, res.json.refreshToken) end
        return observe(key, res)
    end

    -- A request to operation key whose body is one byte over limits.body_bytes.
    local function oversized(key, path)
        local method, pattern = key:match("^(%u+) (.+)$")
        local sock = assert(http.raw(srv.port))
        assert(sock:send(string.format("%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            .. "Content-Length: %d\r\n\r\n", method, path or pattern, BODY_LIMIT + 1)))
        -- the answer may come from the headers alone; send the body only if it does not
        local res, err = http.read_response(sock, 1)
        if not res and err == "timeout" then
            sock:settimeout(5)
            sock:send(string.rep("x", BODY_LIMIT + 1))
            res, err = http.read_response(sock, 5)
        end
        sock:close()
        assert(res, "no answer to an oversized body: " .. tostring(err))
        assert.equal(413, res.status)
        return observe(key, res)
    end

    -- Three requests from one address: the last is over RATE_PER_MIN.
    local function rate_limited(key, opts)
        opts.address = fresh_address()
        for _ = 1, RATE_PER_MIN do call(key, opts) end
        local res = call(key, opts)
        assert.equal(429, res.status)
        assert.equal("rate_limited", res.json.error.code)
        return res
    end

    local function register(name, extra)
        local body = auth.church(name .. ".oa", extra)
        local res = call("POST /api/auth/register", { body = body })
        assert.equal(201, res.status, res.body)
        return { tenant = res.json.tenantId, access = res.json.accessToken, refresh = res.json.refreshToken,
                 email = body.email, password = body.password }
    end

    setup(function()
        reg = auth.registry("oaspec")
        tx = telnyx.new()
        srv = server.start {
            config = {
                workers = 1,
                limits = { body_bytes = BODY_LIMIT, request_timeout_s = 30 },
                db = { acquire_timeout_ms = 20000 },
                tenants = { cache_ttl_s = 0 },
                auth = { max_failures = 2, trusted_proxies = "127.0.0.1" },
                telnyx = { send_attempts = 1 },
                metrics = { allow = "127.0.0.1" },
                contacts = { import_max_bytes = BODY_LIMIT },
            },
            env = {
                DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false,
                TELNYX_PUBLIC_KEY = tx.public_key, STEEPLE_AUTH_RATE_PER_MIN = tostring(RATE_PER_MIN),
                -- outbound sends are refused at once: nothing listens there
                TELNYX_API_BASE = "http://127.0.0.1:" .. server.free_port(),
            },
        }
        owner = register("owner", { phoneNumber = "+15553100001" })
        suspended = register("suspended", { phoneNumber = "+15553100002" })
        psql(reg.url, "UPDATE tenants SET status = 'suspended' WHERE id = '" .. suspended.tenant .. "'")
        -- an admin of role admin in the owner's church
        member = { email = "member." .. auth.STAMP .. "@oa.example.org", password = "member password 1" }
        secrets.add(member.email, member.password)
        local res = call("POST /api/admins", { token = owner.access,
            body = { email = member.email, password = member.password, name = "Member" } })
        assert.equal(201, res.status, res.body)
        res = call("POST /api/auth/login", { body = { email = member.email, password = member.password } })
        assert.equal(200, res.status, res.body)
        member.access = res.json.accessToken
        -- a conversation of the owner's church
        res = observe("POST " .. HOOKS[1],
            tx:post(srv, HOOKS[1], telnyx.received("oa-pm-1", "+15553109999", "+15553100001", "Hello openapi")))
        assert.equal(200, res.status, res.body)
        res = call("GET /api/conversations", { token = owner.access })
        conversation_id = res.json.conversations[1].id
    end)

    teardown(function()
        if srv then srv:stop(10) end
        if reg then reg:drop() end
        server.cleanup()
    end)

    before_each(function() srv:mark() end)

    it("serves the document: 200, application/json, the file's bytes, OpenAPI 3.1.0", function()
        local res = call("GET /openapi.json")
        assert.equal(200, res.status)
        assert.equal("application/json", media_type(res))
        assert.equal(DOC_TEXT, res.body)
        assert.equal("3.1.0", res.json.openapi)
        local head = assert(http.request { port = srv.port, method = "HEAD", path = "/openapi.json" })
        assert.equal(200, head.status)
        assert.equal("", head.body)
        assert_all_seen("GET /openapi.json")
        assert.same({}, srv:unexpected_errors())
    end)

    it("refuses to start on scripts whose openapi.json is missing or malformed, naming the file", function()
        for _, broken in ipairs { '{"openapi": ', '["not an object"]', false } do
            local dir = server.scripts_dir()
            if broken then server.write_file(dir .. "/openapi.json", broken) else os.remove(dir .. "/openapi.json") end
            local config = server.write_config(server.default_config())
            local status, stderr = server.run_binary({ "serve", "--config", config, "--scripts", dir },
                { PORT = tostring(server.free_port()), DATABASE_URL = reg.url }, 20)
            assert.equal(1, status, stderr)
            assert.truthy(stderr:find(dir .. "/openapi.json", 1, true), stderr)
        end
    end)

    it("GET /health, /ready and /metrics", function()
        assert.equal(200, call("GET /health").status)
        assert.equal(200, call("GET /ready").status)
        assert.equal(200, call("GET /metrics").status)
        -- metrics.allow is 127.0.0.1 alone here: another client gets 404
        assert.equal(404, call("GET /metrics", { source = "127.0.0.2" }).status)
        for _, key in ipairs { "GET /health", "GET /ready", "GET /metrics" } do assert_all_seen(key) end
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/auth/register", function()
        local key = "POST /api/auth/register"
        local res = call(key, { body = { churchName = "x", email = "not an email", password = "short" } })
        assert.equal(400, res.status)
        assert.equal("validation_failed", res.json.error.code)
        assert.same({ "adminName", "churchName", "email", "password" },
            (function()
                local names = {}
                for name in pairs(res.json.error.fields) do names[#names + 1] = name end
                table.sort(names)
                return names
            end)())
        assert.equal("invalid_json", call(key, { body = "[1]" }).json.error.code)
        local taken = call(key, { body = auth.church("dup.oa", { email = owner.email }) })
        assert.equal("email_taken", taken.json.error.code)
        taken = call(key, { body = auth.church("dup2.oa", { phoneNumber = "+15553100001" }) })
        assert.equal("phone_taken", taken.json.error.code)
        assert.equal(415, call(key, { body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        rate_limited(key, { body = "{}" })
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/auth/login", function()
        local key = "POST /api/auth/login"
        local locked = register("locked")
        local res = call(key, { body = { email = owner.email, password = owner.password } })
        assert.equal(200, res.status, res.body)
        assert.equal(owner.tenant, res.json.tenantId)
        assert.equal(400, call(key, { body = { email = owner.email } }).status)
        assert.equal(400, call(key, { body = "[]" }).status)
        -- auth.max_failures = 2: the second failure still gets 401 and locks
        for _ = 1, 2 do
            res = call(key, { body = { email = locked.email, password = "a wrong password" } })
            assert.equal("invalid_credentials", res.json.error.code)
        end
        res = call(key, { body = { email = locked.email, password = locked.password } })
        assert.equal("account_locked", res.json.error.code)
        assert.truthy(tonumber(res.headers["retry-after"]) >= 1)
        res = call(key, { body = { email = suspended.email, password = suspended.password } })
        assert.equal("tenant_unavailable", res.json.error.code)
        assert.equal(415, call(key, { body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        rate_limited(key, { body = "{}" })
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/auth/refresh", function()
        local key = "POST /api/auth/refresh"
        local res = call("POST /api/auth/login", { body = { email = owner.email, password = owner.password } })
        local first = res.json.refreshToken
        res = call(key, { body = { refreshToken = first } })
        assert.equal(200, res.status, res.body)
        assert.not_equal(first, res.json.refreshToken)
        assert.equal("unauthorized", call(key, { body = { refreshToken = first } }).json.error.code)
        assert.equal(401, call(key, { body = { refreshToken = "not-a-token" } }).status)
        assert.equal("validation_failed", call(key, { body = {} }).json.error.code)
        res = call(key, { body = { refreshToken = suspended.refresh } })
        assert.equal("tenant_unavailable", res.json.error.code)
        assert.equal(415, call(key, { body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        rate_limited(key, { body = "{}" })
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/auth/logout", function()
        local key = "POST /api/auth/logout"
        local res = call("POST /api/auth/login", { body = { email = owner.email, password = owner.password } })
        local token, refresh = res.json.accessToken, res.json.refreshToken
        assert.equal(204, call(key, { token = token, body = { refreshToken = refresh } }).status)
        assert.equal(401, call("POST /api/auth/refresh", { body = { refreshToken = refresh } }).status)
        assert.equal("validation_failed", call(key, { token = token, body = {} }).json.error.code)
        res = call(key, { body = { refreshToken = refresh } })
        assert.equal("unauthorized", res.json.error.code)
        assert.equal("Bearer", res.headers["www-authenticate"])
        res = call(key, { token = suspended.access, body = { refreshToken = suspended.refresh } })
        assert.equal("tenant_unavailable", res.json.error.code)
        assert.equal(415, call(key, { token = token, body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        rate_limited(key, { body = "{}" })
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("GET /api/me and GET /api/admins", function()
        for _, key in ipairs { "GET /api/me", "GET /api/admins" } do
            assert.equal(200, call(key, { token = owner.access }).status)
            assert.equal(401, call(key).status)
            assert.equal(401, call(key, { token = "a.b.c" }).status)
            assert.equal("tenant_unavailable", call(key, { token = suspended.access }).json.error.code)
            assert_all_seen(key)
        end
        local me = call("GET /api/me", { token = owner.access }).json
        assert.same({ owner.tenant, "owner", "+15553100001" }, { me.tenantId, me.admin.role, me.church.phoneNumber })
        assert.equal(2, #call("GET /api/admins", { token = owner.access }).json.admins)
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/admins", function()
        local key = "POST /api/admins"
        local body = { email = "second." .. auth.STAMP .. "@oa.example.org", password = "second password", name = "Two" }
        secrets.add(body.email, body.password)
        local res = call(key, { token = owner.access, body = body })
        assert.equal(201, res.status, res.body)
        assert.equal("admin", res.json.admin.role)
        assert.equal("email_taken", call(key, { token = owner.access, body = body }).json.error.code)
        assert.equal("validation_failed", call(key, { token = owner.access, body = { name = "" } }).json.error.code)
        assert.equal("forbidden", call(key, { token = member.access, body = body }).json.error.code)
        assert.equal(401, call(key, { body = body }).status)
        res = call(key, { token = suspended.access, body = body })
        assert.equal("tenant_unavailable", res.json.error.code)
        assert.equal(415, call(key, { token = owner.access, body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/contacts/import", function()
        local key = "POST /api/contacts/import"
        local csv = { token = owner.access, body = "phone,first_name\n(555) 310-4001,Ann\nnope,Bob\n",
                      content_type = "text/csv" }
        local res = call(key, csv)
        assert.equal(200, res.status, res.body)
        assert.same({ created = 1, updated = 0, unchanged = 0, rejected = { { row = 3, reason = "invalid_phone" } } },
            res.json)
        csv.body = "name\nAnn\n"
        assert.equal("validation_failed", call(key, csv).json.error.code)
        assert.equal(401, call(key, { body = "phone\n", content_type = "text/csv" }).status)
        res = call(key, { token = suspended.access, body = "phone\n", content_type = "text/csv" })
        assert.equal("tenant_unavailable", res.json.error.code)
        assert.equal(415, call(key, { token = owner.access, body = "phone\n" }).status)
        oversized(key)
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("GET /api/conversations", function()
        local key = "GET /api/conversations"
        local res = call(key, { token = owner.access })
        assert.equal(200, res.status)
        assert.equal(1, #res.json.conversations)
        res = call(key, { token = owner.access, path = "/api/conversations?limit=0" })
        assert.same({ limit = "must be an integer from 1 to 100" }, res.json.error.fields)
        res = call(key, { token = owner.access, path = "/api/conversations?cursor=nonsense" })
        assert.equal("validation_failed", res.json.error.code)
        assert.equal(401, call(key).status)
        assert.equal("tenant_unavailable", call(key, { token = suspended.access }).json.error.code)
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("GET /api/conversations/{id}/messages", function()
        local key = "GET /api/conversations/{id}/messages"
        local path = "/api/conversations/" .. conversation_id .. "/messages"
        local res = call(key, { token = owner.access, path = path })
        assert.equal(200, res.status)
        assert.equal("Hello openapi", res.json.messages[1].text)
        assert.equal(400, call(key, { token = owner.access, path = path .. "?limit=101" }).status)
        assert.equal(404, call(key, { token = owner.access,
            path = "/api/conversations/00000000-0000-0000-0000-000000000000/messages" }).status)
        assert.equal(404, call(key, { token = owner.access, path = "/api/conversations/nope/messages" }).status)
        assert.equal(401, call(key, { path = path }).status)
        assert.equal(503, call(key, { token = suspended.access, path = path }).status)
        assert_all_seen(key)
        assert.same({}, srv:unexpected_errors())
    end)

    it("POST /api/conversations/{id}/messages", function()
        local key = "POST /api/conversations/{id}/messages"
        local path = "/api/conversations/" .. conversation_id .. "/messages"
        local res = call(key, { token = owner.access, path = path, body = { text = "Welcome back" } })
        assert.equal(202, res.status, res.body)
        assert.same({ "outbound", "queued" }, { res.json.message.direction, res.json.message.status })
        res = call(key, { token = owner.access, path = path, body = {} })
        assert.equal("validation_failed", res.json.error.code)
        res = call(key, { token = owner.access, path = path, body = "[]" })
        assert.equal("invalid_json", res.json.error.code)
        assert.equal(404, call(key, { token = owner.access, body = { text = "x" },
            path = "/api/conversations/00000000-0000-0000-0000-000000000000/messages" }).status)
        assert.equal(401, call(key, { path = path, body = { text = "x" } }).status)
        assert.equal(503, call(key, { token = suspended.access, path = path, body = { text = "x" } }).status)
        assert.equal(415, call(key, { token = owner.access, path = path, body = "{}", content_type = "text/plain" }).status)
        oversized(key, path)
        psql(url_of_owner(), "INSERT INTO suppressions (phone_number, source) VALUES ('+15553109999', 'carrier')")
        assert.equal("opted_out", call(key, { token = owner.access, path = path, body = { text = "x" } }).json.error.code)
        assert_all_seen(key)
        -- the send is refused (nothing listens at TELNYX_API_BASE): failed after one try
        assert.truthy(server.wait_until(function()
            local list = call("GET /api/conversations/{id}/messages", { token = owner.access, path = path })
            return list.json.messages[1].status == "failed"
        end, 30))
        assert.same({}, srv:unexpected_errors())
    end)

    it("PATCH /api/church", function()
        local key = "PATCH /api/church"
        local res = call(key, { token = owner.access, body = { helpText = "Text us." } })
        assert.equal(200, res.status, res.body)
        assert.same({ "Text us.", "America/New_York" }, { res.json.church.helpText, res.json.church.timeZone })
        assert.equal("validation_failed", call(key, { token = owner.access, body = { timeZone = "Nowhere/City" } })
            .json.error.code)
        assert.equal("invalid_json", call(key, { token = owner.access, body = "[]" }).json.error.code)
        assert.equal("forbidden", call(key, { token = member.access, body = { name = "Mine now" } }).json.error.code)
        assert.equal(401, call(key, { body = {} }).status)
        assert.equal("tenant_unavailable", call(key, { token = suspended.access, body = {} }).json.error.code)
        assert.equal(415, call(key, { token = owner.access, body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        assert_all_seen(key)
        assert.same({ "Text us." }, { call("GET /api/me", { token = owner.access }).json.church.helpText })
        assert.same({}, srv:unexpected_errors())
    end)

    describe("contacts and lists", function()
        local list, contact -- made by the first cases, used by the later ones
        local NO_ID <const> = "00000000-0000-4000-8000-000000000000"

        -- The statuses every operation of a church's data shares: 401 and 503.
        local function unauthorized_and_suspended(key, opts)
            local o = {}
            for k, v in pairs(opts) do o[k] = v end
            o.token = nil
            assert.equal(401, call(key, o).status)
            o.token = suspended.access
            assert.equal("tenant_unavailable", call(key, o).json.error.code)
        end

        it("POST /api/lists and GET /api/lists", function()
            local key = "POST /api/lists"
            local res = call(key, { token = owner.access, body = { name = "Youth", keyword = "youth" } })
            assert.equal(201, res.status, res.body)
            list = res.json.list
            assert.equal("keyword_taken", call(key, { token = owner.access, body = { name = "Y", keyword = "YOUTH" } })
                .json.error.code)
            assert.equal("validation_failed", call(key, { token = owner.access, body = { name = "x", keyword = "STOP" } })
                .json.error.code)
            assert.equal(415, call(key, { token = owner.access, body = "{}", content_type = "text/plain" }).status)
            oversized(key)
            unauthorized_and_suspended(key, { body = { name = "x" } })
            assert_all_seen(key)
            key = "GET /api/lists"
            assert.same({ list }, call(key, { token = owner.access }).json.lists)
            unauthorized_and_suspended(key, {})
            assert_all_seen(key)
            assert.same({}, srv:unexpected_errors())
        end)

        it("GET, PATCH and DELETE /api/lists/{id}", function()
            local other = call("POST /api/lists", { token = owner.access, body = { name = "Other", keyword = "OTHER" } })
                .json.list
            local path = "/api/lists/" .. other.id
            local key = "GET /api/lists/{id}"
            assert.equal(200, call(key, { token = owner.access, path = path }).status)
            assert.equal(404, call(key, { token = owner.access, path = "/api/lists/nope" }).status)
            unauthorized_and_suspended(key, { path = path })
            assert_all_seen(key)
            key = "PATCH /api/lists/{id}"
            assert.equal("Choir", call(key, { token = owner.access, path = path, body = { name = "Choir" } }).json.list.name)
            assert.equal("keyword_taken", call(key, { token = owner.access, path = path, body = { keyword = "youth" } })
                .json.error.code)
            assert.equal(400, call(key, { token = owner.access, path = path, body = { name = "" } }).status)
            assert.equal(404, call(key, { token = owner.access, path = "/api/lists/" .. NO_ID, body = {} }).status)
            assert.equal(415, call(key, { token = owner.access, path = path, body = "{}", content_type = "text/plain" })
                .status)
            oversized(key, path)
            unauthorized_and_suspended(key, { path = path, body = {} })
            assert_all_seen(key)
            key = "DELETE /api/lists/{id}"
            assert.equal(204, call(key, { token = owner.access, path = path }).status)
            assert.equal(404, call(key, { token = owner.access, path = path }).status)
            unauthorized_and_suspended(key, { path = path })
            assert_all_seen(key)
            assert.same({}, srv:unexpected_errors())
        end)

        it("POST and GET /api/contacts", function()
            local key = "POST /api/contacts"
            local res = call(key, { token = owner.access,
                body = { phoneNumber = "+15553200001", firstName = "Ruth", lists = { list.id }, consent = "opted_in" } })
            assert.equal(201, res.status, res.body)
            contact = res.json.contact
            assert.equal("contact_exists", call(key, { token = owner.access, body = { phoneNumber = "+15553200001" } })
                .json.error.code)
            psql(url_of_owner(), "INSERT INTO suppressions (phone_number, source) VALUES ('+15553200002', 'keyword')")
            assert.equal("opted_out", call(key, { token = owner.access,
                body = { phoneNumber = "+15553200002", consent = "opted_in" } }).json.error.code)
            assert.same({ "lists", "phoneNumber" }, (function()
                local names = {}
                for name in pairs(call(key, { token = owner.access, body = { lists = { "nope" } } }).json.error.fields) do
                    names[#names + 1] = name
                end
                table.sort(names)
                return names
            end)())
            assert.equal(415, call(key, { token = owner.access, body = "{}", content_type = "text/plain" }).status)
            oversized(key)
            unauthorized_and_suspended(key, { body = { phoneNumber = "+15553200003" } })
            assert_all_seen(key)
            key = "GET /api/contacts"
            res = call(key, { token = owner.access, path = "/api/contacts?q=ru&consent=opted_in&list=" .. list.id })
            assert.same({ contact }, res.json.contacts)
            assert.equal(cjson.null, res.json.nextCursor)
            assert.equal(400, call(key, { token = owner.access, path = "/api/contacts?limit=101" }).status)
            unauthorized_and_suspended(key, {})
            assert_all_seen(key)
            assert.same({}, srv:unexpected_errors())
        end)

        it("GET, PATCH and DELETE /api/contacts/{id}, and its consent history", function()
            local path = "/api/contacts/" .. contact.id
            local key = "GET /api/contacts/{id}"
            assert.same(contact, call(key, { token = owner.access, path = path }).json.contact)
            assert.equal(404, call(key, { token = owner.access, path = "/api/contacts/" .. NO_ID }).status)
            unauthorized_and_suspended(key, { path = path })
            assert_all_seen(key)
            key = "GET /api/contacts/{id}/consent"
            local events = call(key, { token = owner.access, path = path .. "/consent" }).json.events
            assert.same({ "unknown", "opted_in", "admin" }, { events[1].from, events[1].to, events[1].source })
            assert.equal(404, call(key, { token = owner.access, path = "/api/contacts/nope/consent" }).status)
            unauthorized_and_suspended(key, { path = path .. "/consent" })
            assert_all_seen(key)
            key = "PATCH /api/contacts/{id}"
            local res = call(key, { token = owner.access, path = path, body = { lastName = "Miller", lists = {} } })
            assert.same({ "Miller", {} }, { res.json.contact.lastName, res.json.contact.lists })
            local stopped = call("POST /api/contacts", { token = owner.access, body = { phoneNumber = "+15553200002" } })
                .json.contact
            assert.equal("opted_out", call(key, { token = owner.access, path = "/api/contacts/" .. stopped.id,
                body = { consent = "opted_in" } }).json.error.code)
            assert.equal(400, call(key, { token = owner.access, path = path, body = { consent = "opted_out" } }).status)
            assert.equal(404, call(key, { token = owner.access, path = "/api/contacts/" .. NO_ID, body = {} }).status)
            assert.equal(415, call(key, { token = owner.access, path = path, body = "{}", content_type = "text/plain" })
                .status)
            oversized(key, path)
            unauthorized_and_suspended(key, { path = path, body = {} })
            assert_all_seen(key)
            key = "DELETE /api/contacts/{id}"
            assert.equal(204, call(key, { token = owner.access, path = "/api/contacts/" .. stopped.id }).status)
            assert.equal(404, call(key, { token = owner.access, path = "/api/contacts/" .. stopped.id }).status)
            unauthorized_and_suspended(key, { path = path })
            assert_all_seen(key)
            assert.same({}, srv:unexpected_errors())
        end)

        it("PUT and DELETE /api/lists/{id}/contacts/{contactId}", function()
            local path = "/api/lists/" .. list.id .. "/contacts/" .. contact.id
            local missing = "/api/lists/" .. list.id .. "/contacts/" .. NO_ID
            for _, key in ipairs { "PUT /api/lists/{id}/contacts/{contactId}",
                "DELETE /api/lists/{id}/contacts/{contactId}" } do
                assert.equal(204, call(key, { token = owner.access, path = path }).status)
                assert.equal(404, call(key, { token = owner.access, path = missing }).status)
                unauthorized_and_suspended(key, { path = path })
                if key:match("^PUT") then
                    -- the route takes no body: one sent is ignored, whatever its type, unless over the limit
                    assert.equal(204, call(key, { token = owner.access, path = path, body = "{}",
                        content_type = "text/plain" }).status)
                    oversized(key, path)
                end
                assert_all_seen(key)
            end
            assert.equal(0, call("GET /api/lists/{id}", { token = owner.access, path = "/api/lists/" .. list.id })
                .json.list.memberCount)
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    it("the broadcasts and their moves", function()
        local list = call("POST /api/lists", { token = owner.access, body = { name = "Broadcast", keyword = "BCAST" } })
            .json.list
        local later = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 3600)
        local key = "POST /api/broadcasts"
        local res = call(key, { token = owner.access, body = { text = "Hi {{firstName|friend}}", lists = { list.id },
            sendAt = later } })
        assert.equal(201, res.status, res.body)
        local b = res.json.broadcast
        assert.equal("scheduled", b.status)
        assert.is_string(call(key, { token = owner.access, body = { text = "Hi {{nickname}}", lists = { list.id } } })
            .json.error.fields.text)
        assert.equal("invalid_json", call(key, { token = owner.access, body = "[]" }).json.error.code)
        assert.equal(415, call(key, { token = owner.access, body = "{}", content_type = "text/plain" }).status)
        oversized(key)
        assert.equal(401, call(key, { body = {} }).status)
        assert.equal("tenant_unavailable", call(key, { token = suspended.access, body = {} }).json.error.code)
        assert_all_seen(key)
        key = "GET /api/broadcasts"
        assert.same({ b.id }, { call(key, { token = owner.access }).json.broadcasts[1].id })
        assert.equal(400, call(key, { token = owner.access, path = "/api/broadcasts?limit=101" }).status)
        assert.equal(401, call(key).status)
        assert.equal("tenant_unavailable", call(key, { token = suspended.access }).json.error.code)
        assert_all_seen(key)
        local path = "/api/broadcasts/" .. b.id
        local missing = "/api/broadcasts/00000000-0000-4000-8000-000000000000"
        key = "GET /api/broadcasts/{id}"
        assert.same(b, call(key, { token = owner.access, path = path }).json.broadcast)
        assert.equal(404, call(key, { token = owner.access, path = missing }).status)
        assert.equal(401, call(key, { path = path }).status)
        assert.equal("tenant_unavailable", call(key, { token = suspended.access, path = path }).json.error.code)
        assert_all_seen(key)
        -- scheduled -> paused -> scheduled -> cancelled, each move refused once out of turn
        for _, move in ipairs { { "pause", "paused" }, { "resume", "scheduled" }, { "cancel", "cancelled" } } do
            key = "POST /api/broadcasts/{id}/" .. move[1]
            if move[1] == "resume" then
                assert.equal(200, call("POST /api/broadcasts/{id}/pause", { token = owner.access,
                    path = path .. "/pause" }).status)
            end
            res = call(key, { token = owner.access, path = path .. "/" .. move[1] })
            assert.equal(200, res.status, res.body)
            assert.equal(move[2], res.json.broadcast.status)
            -- the same move again is out of turn
            res = call(key, { token = owner.access, path = path .. "/" .. move[1] })
            assert.equal("invalid_state", res.json.error.code)
            if move[1] == "pause" then
                assert.equal(200, call("POST /api/broadcasts/{id}/resume", { token = owner.access,
                    path = path .. "/resume" }).status)
            end
            assert.equal(404, call(key, { token = owner.access, path = missing .. "/" .. move[1] }).status)
            assert.equal(401, call(key, { path = path .. "/" .. move[1] }).status)
            assert.equal("tenant_unavailable", call(key, { token = suspended.access, path = path .. "/" .. move[1] })
                .json.error.code)
            assert_all_seen(key)
        end
        assert.same({}, srv:unexpected_errors())
    end)

    for i, hook in ipairs(HOOKS) do
        it("POST " .. hook, function()
            local key = "POST " .. hook
            local function post(body, headers)
                return observe(key, tx:post(srv, hook, body, headers))
            end
            local received = telnyx.received("oa-hook-" .. i, "+15553109998", "+15553100001", "Hello hook " .. i)
            assert.same({ status = "stored" }, post(received).json)
            assert.same({ status = "duplicate" }, post(received).json)
            assert.same({ status = "ignored" }, post(telnyx.status("message.sent", "oa-unknown", "+15553100001", "sent")).json)
            local unroutable = telnyx.received("oa-hook-u" .. i, "+15553109998", "+15553199999")
            assert.same({ status = "unroutable" }, post(unroutable).json)
            assert.equal("invalid_json", post("[1]").json.error.code)
            assert.equal("validation_failed", post('{"data":{}}').json.error.code)
            local res = post(received, { ["Content-Type"] = "application/json" })
            assert.equal("invalid_signature", res.json.error.code)
            local headers = tx:headers(received)
            headers["Content-Type"] = "text/plain"
            assert.equal(415, post(received, headers).status)
            oversized(key)
            assert_all_seen(key)
            assert.same({}, srv:unexpected_errors())
        end)
    end

    it("was driven through every operation of the document", function()
        for pattern, item in pairs(DOC.paths) do
            for method in pairs(item) do
                if method ~= "parameters" then
                    local key = method:upper() .. " " .. pattern
                    assert.is_table(seen[key], key .. " was never called")
                end
            end
        end
    end)
end)
