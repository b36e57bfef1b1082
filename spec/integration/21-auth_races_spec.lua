-- Login lockout and logout under concurrency, against the real binary and
-- PostgreSQL: concurrent attempts cannot try more passwords than the lock
-- allows, the lock duration never overflows, and a refresh racing a logout
-- leaves no valid token behind.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local cjson = require "cjson"

local psql, url_of = pg.psql, pg.url_of
local post, church = auth.post, auth.church

local MAX_FAILURES <const> = 5
local LOCK_MAX_S <const> = 600

local CONFIG = {
    workers = 2,
    limits = { request_timeout_s = 60 },
    db = { acquire_timeout_ms = 30000 },
    tenants = { cache_ttl_s = 0 },
    auth = { max_failures = MAX_FAILURES, lock_initial_s = 1, lock_max_s = LOCK_MAX_S },
}

local reg

-- A new church; returns its registration body, the answer's JSON and the
-- URL of its database.
local function new_church(srv, n)
    local body = church(n)
    local res = post(srv, "/api/auth/register", body)
    assert.equal(201, res.status, res.body)
    local dbname = psql(reg.url, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'")
    return body, res.json, url_of(dbname)
end

local function login_spec(srv, email, password)
    return { port = srv.port, method = "POST", path = "/api/auth/login", timeout = 60,
        headers = { ["Content-Type"] = "application/json" },
        body = cjson.encode { email = email, password = password } }
end

-- The admin's lockout columns: "failed_attempts|lock_count|locked".
local function lock_row(tdb)
    return psql(tdb, "SELECT failed_attempts, lock_count, coalesce(locked_until > now(), false) FROM admins")
end

local function end_lock(tdb)
    psql(tdb, "UPDATE admins SET locked_until = now() - interval '1 second' WHERE locked_until IS NOT NULL")
end

-- Counts the answers by status; every one must be 200, 401 or 429, and each
-- 429 an account_locked with Retry-After.
local function tally(responses)
    local n = { [200] = 0, [401] = 0, [429] = 0 }
    for i, res in ipairs(responses) do
        assert.is_nil(res.error, res.error)
        assert.truthy(n[res.status], "attempt " .. i .. ": " .. tostring(res.status) .. " " .. tostring(res.body))
        n[res.status] = n[res.status] + 1
        if res.status == 429 then
            assert.equal("account_locked", res.json.error.code)
            assert.truthy(tonumber(res.headers["retry-after"]) >= 1)
        elseif res.status == 401 then
            assert.equal("invalid_credentials", res.json.error.code)
        end
    end
    return n
end

local function wrong(srv, body, i)
    return post(srv, "/api/auth/login", { email = body.email, password = "wrong password " .. i })
end

describe("auth races", function()
    local srv = suite.server(function()
        reg = auth.registry("racespec")
        return { config = CONFIG, env = reg.env }
    end, {
        stop_s = 10,
        after = function()
            reg:drop()
        end,
    })

    describe("login lockout", function()
        it("lets 30 concurrent wrong passwords try at most max_failures, then a success resets it", function()
            local body, _, tdb = new_church(srv, "burst")
            -- a long lock, so that the whole burst falls inside it however slow the machine
            psql(tdb, "UPDATE admins SET lock_count = 9")
            local specs = {}
            for i = 1, 30 do specs[i] = login_spec(srv, body.email, "wrong password " .. i) end
            local n = tally(http.concurrent(specs))
            assert.equal(0, n[200])
            assert.is_true(n[401] <= MAX_FAILURES, n[401] .. " wrong passwords were tried")
            assert.equal(30 - n[401], n[429])
            -- the lock ends; the right password signs in and clears the count
            end_lock(tdb)
            local ok = post(srv, "/api/auth/login", { email = body.email, password = body.password })
            assert.equal(200, ok.status, ok.body)
            assert.equal("0|0|f", lock_row(tdb))
            assert.equal(401, wrong(srv, body, 1).status)
            assert.equal("1|0|f", lock_row(tdb))
            assert.same({}, srv:unexpected_errors())
        end)

        it("a lock ends by itself, and the right password then signs in", function()
            local body, _, tdb = new_church(srv, "expire")
            for i = 1, MAX_FAILURES do assert.equal(401, wrong(srv, body, i).status, "attempt " .. i) end
            -- locked for lock_initial_s (1 s), which may be over already
            assert.equal("0|1", psql(tdb, "SELECT failed_attempts, lock_count FROM admins WHERE locked_until IS NOT NULL"))
            local res
            assert.truthy(server.wait_until(function()
                res = post(srv, "/api/auth/login", { email = body.email, password = body.password })
                return res.status ~= 429
            end, 30))
            assert.equal(200, res.status, res.body)
            assert.equal("0|0|f", lock_row(tdb))
            assert.same({}, srv:unexpected_errors())
        end)

        it("15 wrong passwords and the right one at once: no more tried than allowed, no lock after a success",
            function()
                local body, _, tdb = new_church(srv, "mixed")
                psql(tdb, "UPDATE admins SET lock_count = 9") -- a long lock, as above
                local specs = {}
                for i = 1, 15 do specs[i] = login_spec(srv, body.email, "wrong password " .. i) end
                table.insert(specs, 8, login_spec(srv, body.email, body.password))
                local responses = http.concurrent(specs)
                local n = tally(responses)
                local right = responses[8].status
                assert.truthy(right == 200 or right == 429, tostring(right))
                assert.is_true(n[401] + n[200] <= MAX_FAILURES,
                    (n[401] + n[200]) .. " passwords were tried")
                local row = lock_row(tdb)
                if right == 200 then
                    assert.truthy(row:match("^%d+|0|f$"), "after a success: " .. row)
                else
                    assert.equal(MAX_FAILURES, n[401])
                    assert.equal("0|10|t", row)
                end
                assert.same({}, srv:unexpected_errors())
            end)

        it("keeps locking at lock_max_s however many locks came before", function()
            local body, _, tdb = new_church(srv, "many")
            for _, start in ipairs { 1023, 2000 } do
                psql(tdb, "UPDATE admins SET lock_count = " .. start .. ", failed_attempts = 0, locked_until = NULL")
                for round = 1, 2 do
                    for i = 1, MAX_FAILURES do
                        local res = wrong(srv, body, i)
                        assert.equal(401, res.status, start .. "/" .. round .. "/" .. i .. ": " .. res.body)
                    end
                    local locked = post(srv, "/api/auth/login", { email = body.email, password = body.password })
                    assert.equal(429, locked.status, locked.body)
                    local retry = tonumber(locked.headers["retry-after"])
                    assert.truthy(retry > LOCK_MAX_S / 2 and retry <= LOCK_MAX_S, tostring(retry))
                    end_lock(tdb)
                end
                local count = tonumber((psql(tdb, "SELECT lock_count FROM admins")))
                assert.truthy(count >= 1 and count <= start, tostring(count))
            end
            assert.equal(200, post(srv, "/api/auth/login", { email = body.email, password = body.password }).status)
            assert.equal("0|0|f", lock_row(tdb))
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    describe("logout", function()
        it("revokes a token that a concurrent refresh rotates", function()
            local body = new_church(srv, "logout")
            local rotated = 0
            for round = 1, 50 do
                local s = post(srv, "/api/auth/login", { email = body.email, password = body.password })
                assert.equal(200, s.status, s.body)
                local payload = cjson.encode { refreshToken = s.json.refreshToken }
                local refresh, logout = table.unpack(http.concurrent {
                    { port = srv.port, method = "POST", path = "/api/auth/refresh", timeout = 60, body = payload,
                        headers = { ["Content-Type"] = "application/json" } },
                    { port = srv.port, method = "POST", path = "/api/auth/logout", timeout = 60, body = payload,
                        headers = { ["Content-Type"] = "application/json",
                            Authorization = "Bearer " .. s.json.accessToken } },
                })
                assert.equal(204, logout.status, "round " .. round .. ": " .. tostring(logout.body or logout.error))
                assert.truthy(refresh.status == 200 or refresh.status == 401,
                    "round " .. round .. ": " .. tostring(refresh.status))
                -- the newest token first: presenting the used one would revoke the family anyway
                if refresh.status == 200 then
                    rotated = rotated + 1
                    local again = post(srv, "/api/auth/refresh", { refreshToken = refresh.json.refreshToken })
                    assert.equal(401, again.status, "round " .. round .. ": the rotated token outlived the logout")
                end
                assert.equal(401, post(srv, "/api/auth/refresh", { refreshToken = s.json.refreshToken }).status)
            end
            print("# refresh won the race in " .. rotated .. " of 50 rounds")
            assert.same({}, srv:unexpected_errors())
        end)
    end)

    it("stops cleanly", function() srv:assert_stops_cleanly() end)
end)
