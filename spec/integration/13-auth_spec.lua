-- Registration, login, tokens, lockout and admins, against the real binary
-- and PostgreSQL: every path of API.md's Auth section.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local cjson = require "cjson"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of
local post, get, church = auth.post, auth.get, auth.church
local SECRET = server.DEFAULT_ENV.STEEPLE_JWT_SECRET
local HS256 <const> = '{"alg":"HS256","typ":"JWT"}'

local CONFIG = {
    workers = 2,
    limits = { request_timeout_s = 60 },
    db = { acquire_timeout_ms = 30000 },
    -- the races below register up to 20 churches at once
    tenants = { cache_ttl_s = 0, max_provisioning = 20 },
}

local reg, REG_URL, ENV
local function count(sql) return reg:count(sql) end

local function database_exists(name)
    return psql(BASE_URL, "SELECT count(*) FROM pg_database WHERE datname = '" .. name .. "'") == "1"
end

local function db_of(tenant_id)
    return (psql(REG_URL, "SELECT db_name FROM tenants WHERE id = '" .. tenant_id .. "'"))
end

-- Every secret the specs sent, to look for in the logs at the end.
local secrets = {}
local function register(srv, body)
    secrets[#secrets + 1] = body.password
    secrets[#secrets + 1] = body.email
    local res = post(srv, "/api/auth/register", body)
    if res.status == 201 then
        secrets[#secrets + 1] = res.json.accessToken
        secrets[#secrets + 1] = res.json.refreshToken
    end
    return res
end

describe("auth", function()
    local srv = suite.server(function()
        reg = auth.registry("authspec")
        REG_URL, ENV = reg.url, reg.env
        return { config = CONFIG, env = ENV }
    end, {
        stop_s = 10,
        after = function()
            reg:drop()
        end,
    })

    describe("register", function()
        it("creates the church, its database and its owner, and signs the owner in", function()
            local body = church("reg", { phoneNumber = "+15550000001" })
            local res = register(srv, body)
            assert.equal(201, res.status, res.body)
            local j = res.json
            assert.is_string(j.tenantId)
            assert.same({ id = j.tenantId, name = "Church reg", phoneNumber = "+15550000001",
                timeZone = "America/New_York", helpText = "" }, j.church)
            assert.equal(body.email, j.admin.email)
            assert.equal("Admin reg", j.admin.name)
            assert.equal("owner", j.admin.role)
            assert.equal(900, j.expiresIn)
            assert.truthy(j.accessToken:match("^[%w_-]+%.[%w_-]+%.[%w_-]+$"))
            assert.truthy(j.refreshToken:match("^" .. j.tenantId:gsub("%-", "%%-") .. "%.[%w_-]+$"))
            assert.equal("active", psql(REG_URL, "SELECT status FROM tenants WHERE id = '" .. j.tenantId .. "'"))
            local dbname = db_of(j.tenantId)
            assert.truthy(database_exists(dbname))
            -- at rest: a keyed hash in the registry, ciphertext and argon2id in the tenant
            assert.equal("32", psql(REG_URL, "SELECT length(email_hash) FROM admin_emails WHERE admin_id = '" .. j.admin.id .. "'"))
            local row = psql(url_of(dbname), "SELECT encode(email_enc, 'escape') || ' ' || password_hash FROM admins")
            assert.is_nil(row:find(body.email, 1, true))
            assert.is_nil(row:find(body.password, 1, true))
            assert.truthy(row:find("$argon2id$v=19$m=19456,t=2,p=1$", 1, true))
            assert.same({}, srv:unexpected_errors())
        end)

        it("normalizes the email: trimmed and lower-cased", function()
            local body = church("norm")
            local plain = body.email
            body.email = "  " .. plain:upper() .. " "
            local res = register(srv, body)
            assert.equal(201, res.status, res.body)
            assert.equal(plain, res.json.admin.email)
            local again = register(srv, church("norm2", { email = plain }))
            assert.equal(409, again.status)
            assert.equal("email_taken", again.json.error.code)
            local login = post(srv, "/api/auth/login", { email = " " .. plain:upper(), password = body.password })
            assert.equal(200, login.status, login.body)
        end)

        it("refuses a taken phone number and leaves nothing behind", function()
            assert.equal(201, register(srv, church("ph1", { phoneNumber = "+15550000002" })).status)
            local tenants_before = count("SELECT count(*) FROM tenants")
            local res = register(srv, church("ph2", { phoneNumber = "+15550000002" }))
            assert.equal(409, res.status)
            assert.equal("phone_taken", res.json.error.code)
            assert.equal(tenants_before, count("SELECT count(*) FROM tenants"))
            assert.equal(0, count("SELECT count(*) FROM admin_emails e LEFT JOIN tenants t ON t.id = e.tenant_id WHERE t.id IS NULL"))
        end)

        it("registers 20 different churches at once", function()
            local specs = {}
            for i = 1, 20 do
                local body = church("many" .. i)
                secrets[#secrets + 1] = body.password
                specs[i] = { port = srv.port, method = "POST", path = "/api/auth/register", timeout = 60,
                    headers = { ["Content-Type"] = "application/json" }, body = cjson.encode(body) }
            end
            local ids = {}
            for i, res in ipairs(http.concurrent(specs)) do
                assert.equal(201, res.status, "registration " .. i .. ": " .. tostring(res.body or res.err))
                ids[#ids + 1] = res.json.tenantId
            end
            for _, id in ipairs(ids) do assert.truthy(database_exists(db_of(id))) end
            assert.equal(0, count("SELECT count(*) FROM tenants WHERE status = 'provisioning'"))
            assert.same({}, srv:unexpected_errors())
        end)

        it("lets exactly one of 10 registrations with one email win", function()
            local before = count("SELECT count(*) FROM tenants")
            local dbs_before = #auth.tenant_databases(psql, BASE_URL)
            local specs = {}
            for i = 1, 10 do
                local body = church("race" .. i, { email = "race." .. auth.STAMP .. "@example.org" })
                specs[i] = { port = srv.port, method = "POST", path = "/api/auth/register", timeout = 60,
                    headers = { ["Content-Type"] = "application/json" }, body = cjson.encode(body) }
            end
            local created, taken = 0, 0
            for _, res in ipairs(http.concurrent(specs)) do
                if res.status == 201 then created = created + 1 end
                if res.status == 409 and res.json.error.code == "email_taken" then taken = taken + 1 end
            end
            assert.equal(1, created)
            assert.equal(9, taken)
            assert.equal(before + 1, count("SELECT count(*) FROM tenants"))
            assert.equal(dbs_before + 1, #auth.tenant_databases(psql, BASE_URL))
            assert.equal(0, count("SELECT count(*) FROM tenants WHERE status = 'provisioning'"))
        end)
    end)

    describe("bad registration input", function()
        local function fields_of(body)
            local res = post(srv, "/api/auth/register", body)
            assert.equal(400, res.status, res.body)
            assert.equal("validation_failed", res.json.error.code)
            return res.json.error.fields
        end

        it("names every missing field", function()
            assert.same({ churchName = "is required", email = "is required", password = "is required",
                adminName = "is required" }, fields_of({}))
            assert.same({ churchName = "is required" }, fields_of(church("x", { churchName = cjson.null })))
        end)

        it("names fields of the wrong type", function()
            local f = fields_of { churchName = 5, email = true, password = { 1 }, adminName = { a = 1 },
                phoneNumber = 15551234567 }
            for _, name in ipairs { "churchName", "email", "password", "adminName", "phoneNumber" } do
                assert.equal("must be a string", f[name])
            end
        end)

        it("checks lengths in characters", function()
            assert.same({ churchName = "must be 2 to 200 characters" }, fields_of(church("x", { churchName = "A" })))
            assert.same({ churchName = "must be 2 to 200 characters" },
                fields_of(church("x", { churchName = ("a"):rep(201) })))
            assert.same({ password = "must be 10 to 128 characters" }, fields_of(church("x", { password = "123456789" })))
            assert.same({ password = "must be 10 to 128 characters" },
                fields_of(church("x", { password = ("p"):rep(129) })))
            assert.same({ adminName = "must be 1 to 200 characters" }, fields_of(church("x", { adminName = "   " })))
            -- 200 two-byte characters are 200 characters
            local res = register(srv, church("utf8", { churchName = ("é"):rep(200) }))
            assert.equal(201, res.status, res.body)
        end)

        it("refuses control characters and bad emails and phone numbers", function()
            assert.same({ adminName = "must not contain control characters" },
                fields_of(church("x", { adminName = "Ruth\7Miller" })))
            assert.same({ churchName = "must not contain control characters" },
                fields_of(church("x", { churchName = "Grace\nChapel" })))
            for _, bad in ipairs { "plain", "a@b", "two@@example.org", "sp ace@example.org", "a@example",
                "a@-example.org", ".a@example.org", "a\t@example.org", ("x"):rep(250) .. "@example.org" } do
                local f = fields_of(church("x", { email = bad }))
                assert.truthy(f.email, bad)
            end
            for _, bad in ipairs { "15551234567", "+1555abc4567", "+1234567", "+1234567890123456", "" } do
                assert.same({ phoneNumber = "must be a phone number in E.164 form (+ and 8 to 15 digits)" },
                    fields_of(church("x", { phoneNumber = bad })), bad)
            end
        end)

        it("refuses bodies that are not one JSON object", function()
            for _, raw in ipairs { "[1,2]", "not json", '{"email":"a@b.org","email":"c@d.org"}', "" } do
                local res = post(srv, "/api/auth/register", raw)
                assert.equal(400, res.status, raw)
                assert.equal("invalid_json", res.json.error.code)
            end
            local res = post(srv, "/api/auth/register", "{}", { ["Content-Type"] = "text/plain" })
            assert.equal(415, res.status)
        end)
    end)

    describe("login", function()
        local body, tenant
        setup(function()
            body = church("login")
            tenant = register(srv, body).json.tenantId
        end)

        it("signs in with the right password", function()
            local res = post(srv, "/api/auth/login", { email = body.email, password = body.password })
            assert.equal(200, res.status, res.body)
            assert.equal(tenant, res.json.tenantId)
            assert.equal(body.email, res.json.admin.email)
            assert.equal(900, res.json.expiresIn)
            assert.is_string(res.json.accessToken)
            assert.is_string(res.json.refreshToken)
        end)

        it("gives the same answer for a wrong password and an unknown email", function()
            local wrong = post(srv, "/api/auth/login", { email = body.email, password = "not the password" })
            local unknown = post(srv, "/api/auth/login", { email = "nobody." .. auth.STAMP .. "@example.org",
                password = "not the password" })
            assert.equal(401, wrong.status)
            assert.equal(401, unknown.status)
            assert.equal("invalid_credentials", wrong.json.error.code)
            assert.equal(wrong.json.error.message, unknown.json.error.message)
            post(srv, "/api/auth/login", { email = body.email, password = body.password }) -- resets the count
        end)

        it("locks the account after 5 failures, doubles the lock, and a success resets it", function()
            local b = church("lock")
            local id = register(srv, b).json.tenantId
            local tdb = url_of(db_of(id))
            for i = 1, 5 do
                local res = post(srv, "/api/auth/login", { email = b.email, password = "wrong password " .. i })
                assert.equal(401, res.status, "attempt " .. i)
            end
            local locked = post(srv, "/api/auth/login", { email = b.email, password = b.password })
            assert.equal(429, locked.status)
            assert.equal("account_locked", locked.json.error.code)
            local retry = tonumber(locked.headers["retry-after"])
            assert.truthy(retry >= 25 and retry <= 30, tostring(retry))
            -- the lock ends: 5 more failures lock for twice as long
            psql(tdb, "UPDATE admins SET locked_until = now() - interval '1 second'")
            for i = 1, 5 do
                assert.equal(401, post(srv, "/api/auth/login", { email = b.email, password = "wrong " .. i }).status)
            end
            locked = post(srv, "/api/auth/login", { email = b.email, password = b.password })
            assert.equal(429, locked.status)
            retry = tonumber(locked.headers["retry-after"])
            assert.truthy(retry >= 55 and retry <= 60, tostring(retry))
            -- a success after the lock clears everything
            psql(tdb, "UPDATE admins SET locked_until = now() - interval '1 second'")
            assert.equal(200, post(srv, "/api/auth/login", { email = b.email, password = b.password }).status)
            assert.equal("0|0|t", psql(tdb, "SELECT failed_attempts, lock_count, locked_until IS NULL FROM admins"))
            assert.truthy(tonumber(srv:metric("steeple_login_failures_total")) >= 10)
        end)

        it("refuses bad login bodies", function()
            local res = post(srv, "/api/auth/login", { email = body.email })
            assert.equal(400, res.status)
            assert.same({ password = "is required" }, res.json.error.fields)
            res = post(srv, "/api/auth/login", { email = body.email, password = ("p"):rep(129) })
            assert.equal(400, res.status)
            res = post(srv, "/api/auth/login", "[]")
            assert.equal("invalid_json", res.json.error.code)
        end)
    end)

    describe("tokens", function()
        local a, b
        setup(function()
            a = register(srv, church("tokA")).json
            b = register(srv, church("tokB")).json
        end)

        it("/api/me answers with the token's admin and church", function()
            local res = get(srv, "/api/me", a.accessToken)
            assert.equal(200, res.status, res.body)
            assert.equal(a.tenantId, res.json.tenantId)
            assert.same(a.admin, res.json.admin)
            assert.same({ id = a.tenantId, name = "Church tokA", phoneNumber = cjson.null,
                timeZone = "America/New_York", helpText = "" }, res.json.church)
        end)

        it("refuses missing, malformed, forged and expired tokens", function()
            local now = os.time()
            local claims = { sub = a.admin.id, tid = a.tenantId, role = "owner", iat = now, exp = now + 600, jti = "x" }
            local good = auth.forge(HS256, claims, SECRET)
            assert.equal(200, get(srv, "/api/me", good).status) -- the forge is right...
            local expired = auth.forge(HS256,
                { sub = a.admin.id, tid = a.tenantId, role = "owner", iat = now - 1000, exp = now - 100, jti = "x" }, SECRET)
            local cases = {
                none = nil,
                garbage = "garbage",
                expired = expired,
                other_key = auth.forge(HS256, claims, SECRET .. "x"),
                hs512 = auth.forge('{"alg":"HS512","typ":"JWT"}', claims, SECRET),
                alg_none = auth.b64url('{"alg":"none","typ":"JWT"}') .. "." .. auth.b64url(cjson.encode(claims)) .. ".",
                swapped_tenant = a.accessToken:gsub("^([^.]+)%.[^.]+", "%1." .. auth.b64url(cjson.encode {
                    sub = b.admin.id, tid = b.tenantId, role = "owner", iat = now, exp = now + 600, jti = "y" })),
            }
            for name, token in pairs(cases) do
                local res = get(srv, "/api/me", token)
                assert.equal(401, res.status, name)
                assert.equal("unauthorized", res.json.error.code)
            end
            assert.equal(401, get(srv, "/api/me").status)
            local res = http.request { port = srv.port, path = "/api/me", headers = { Authorization = "Basic abc" } }
            assert.equal(401, res.status)
        end)

        it("never shows one tenant's data to another's token", function()
            local ma, mb = get(srv, "/api/me", a.accessToken).json, get(srv, "/api/me", b.accessToken).json
            assert.equal(a.tenantId, ma.tenantId)
            assert.equal(b.tenantId, mb.tenantId)
            local la = get(srv, "/api/admins", a.accessToken).json.admins
            assert.equal(1, #la)
            assert.equal(a.admin.email, la[1].email)
        end)

        it("rotates refresh tokens and revokes the family on reuse", function()
            local first = post(srv, "/api/auth/refresh", { refreshToken = a.refreshToken })
            assert.equal(200, first.status, first.body)
            assert.equal(a.tenantId, first.json.tenantId)
            assert.are_not.equal(a.refreshToken, first.json.refreshToken)
            assert.equal(200, get(srv, "/api/me", first.json.accessToken).status)
            -- the old one again: refused, and the whole family with it
            local reuse = post(srv, "/api/auth/refresh", { refreshToken = a.refreshToken })
            assert.equal(401, reuse.status)
            assert.equal("unauthorized", reuse.json.error.code)
            assert.equal(401, post(srv, "/api/auth/refresh", { refreshToken = first.json.refreshToken }).status)
            assert.truthy(srv:wait_log("rotated refresh token was used again", 2))
        end)

        it("refuses malformed refresh tokens", function()
            for _, bad in ipairs { "x", a.tenantId .. ".short", ("a"):rep(80), b.tenantId .. "." .. ("A"):rep(43) } do
                local res = post(srv, "/api/auth/refresh", { refreshToken = bad })
                assert.equal(401, res.status, bad)
            end
            assert.equal(400, post(srv, "/api/auth/refresh", {}).status)
        end)

        it("logout ends the refresh token", function()
            local s = post(srv, "/api/auth/login", { email = b.admin.email, password = "password of church tokB" }).json
            local res = post(srv, "/api/auth/logout", { refreshToken = s.refreshToken },
                { Authorization = "Bearer " .. s.accessToken })
            assert.equal(204, res.status, res.body)
            assert.equal(401, post(srv, "/api/auth/refresh", { refreshToken = s.refreshToken }).status)
            assert.equal(401, post(srv, "/api/auth/logout", { refreshToken = s.refreshToken }).status) -- no bearer
        end)
    end)

    describe("admins", function()
        local owner
        setup(function() owner = register(srv, church("adm")).json end)

        it("an owner adds an admin who can sign in; an admin may not add one", function()
            local new = { email = "second.adm." .. auth.STAMP .. "@example.org", password = "second admin password",
                name = "Second", role = "admin" }
            secrets[#secrets + 1] = new.password
            local res = post(srv, "/api/admins", new, { Authorization = "Bearer " .. owner.accessToken })
            assert.equal(201, res.status, res.body)
            assert.same({ id = res.json.admin.id, email = new.email, name = "Second", role = "admin" }, res.json.admin)
            local s = post(srv, "/api/auth/login", { email = new.email, password = new.password })
            assert.equal(200, s.status)
            assert.equal(owner.tenantId, s.json.tenantId)
            local forbidden = post(srv, "/api/admins", { email = "third@example.org", password = "third admin password",
                name = "Third" }, { Authorization = "Bearer " .. s.json.accessToken })
            assert.equal(403, forbidden.status)
            assert.equal("forbidden", forbidden.json.error.code)
            assert.equal(2, #get(srv, "/api/admins", s.json.accessToken).json.admins)
        end)

        it("refuses an email any church already uses, and bad input", function()
            local other = register(srv, church("adm2")).json
            local h = { Authorization = "Bearer " .. owner.accessToken }
            local res = post(srv, "/api/admins", { email = other.admin.email, password = "some long password",
                name = "Dup" }, h)
            assert.equal(409, res.status)
            assert.equal("email_taken", res.json.error.code)
            res = post(srv, "/api/admins", { email = "x@example.org", password = "some long password", name = "X",
                role = "superuser" }, h)
            assert.same({ role = "must be one of: admin, owner" }, res.json.error.fields)
            -- authentication comes before the body's shape
            assert.equal(401, post(srv, "/api/admins", "[]").status)
        end)
    end)

    describe("suspension", function()
        it("gives 503 tenant_unavailable to login and tokens until activated", function()
            local b = church("susp")
            local j = register(srv, b).json
            assert.equal(0, (server.run_binary({ "tenants", "suspend", j.tenantId }, ENV, 30)))
            local login = post(srv, "/api/auth/login", { email = b.email, password = b.password })
            assert.equal(503, login.status)
            assert.equal("tenant_unavailable", login.json.error.code)
            assert.equal(503, get(srv, "/api/me", j.accessToken).status)
            assert.equal(503, post(srv, "/api/auth/refresh", { refreshToken = j.refreshToken }).status)
            assert.equal(0, (server.run_binary({ "tenants", "activate", j.tenantId }, ENV, 30)))
            assert.equal(200, post(srv, "/api/auth/login", { email = b.email, password = b.password }).status)
        end)
    end)

    it("keeps passwords, tokens and emails out of the log", function()
        local text = srv:log_text()
        assert.truthy(#secrets > 40)
        for _, s in ipairs(secrets) do
            assert.is_nil(text:find(s, 1, true), "the log holds a secret")
        end
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
