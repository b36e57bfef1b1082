-- The auth settings: per-address rate limits over all workers, trusted
-- proxies, the keys (development makes them, production needs them) and the
-- argon2id parameters.
local server = require "support.server"
local http = require "support.http"
local pg = require "support.pg"
local auth = require "support.auth"
local socket = require "socket"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local reg, REG_URL, ENV

local function with(env)
    local out = {}
    for k, v in pairs(ENV) do out[k] = v end
    for k, v in pairs(env) do out[k] = v end
    return out
end

local function login(srv, headers)
    return auth.post(srv, "/api/auth/login", { email = "nobody@example.org", password = "whatever password" }, headers)
end

describe("auth settings", function()
    setup(function()
        reg = auth.registry("authcfg")
        REG_URL, ENV = reg.url, reg.env
    end)

    teardown(function()
        reg:drop()
        server.cleanup()
    end)

    describe("rate limit", function()
        it("allows STEEPLE_AUTH_RATE_PER_MIN per address over all workers, then 429", function()
            local srv = server.start { config = { workers = 2 }, env = with { STEEPLE_AUTH_RATE_PER_MIN = "3" } }
            local codes = {}
            for i = 1, 8 do codes[i] = login(srv).status end
            local limited = 0
            for i = 1, 8 do
                if codes[i] == 429 then limited = limited + 1 else assert.equal(401, codes[i]) end
            end
            assert.equal(5, limited, table.concat(codes, ","))
            local res = login(srv)
            assert.equal("rate_limited", res.json.error.code)
            local retry = tonumber(res.headers["retry-after"])
            assert.truthy(retry and retry >= 1 and retry <= 20, res.headers["retry-after"])
            -- other routes are not limited; a spoofed X-Forwarded-For does not help
            assert.equal(200, http.request({ port = srv.port, path = "/health" }).status)
            assert.equal(429, login(srv, { ["X-Forwarded-For"] = "203.0.113.9" }).status)
            assert.equal(429, auth.post(srv, "/api/auth/register", auth.church("rl")).status)
            srv:assert_stops_cleanly()
        end)

        it("believes X-Forwarded-For only from trusted proxies", function()
            local srv = server.start {
                config = { workers = 2, auth = { trusted_proxies = "10.0.0.0/8, 127.0.0.1" } },
                env = with { STEEPLE_AUTH_RATE_PER_MIN = "2" },
            }
            -- each forwarded client has its own bucket
            for i = 1, 4 do
                assert.equal(401, login(srv, { ["X-Forwarded-For"] = "198.51.100." .. i }).status)
            end
            -- the nearest untrusted hop counts: the proxies in between are skipped
            local chain = { ["X-Forwarded-For"] = "198.51.100.77, 10.1.2.3" }
            assert.equal(401, login(srv, chain).status)
            assert.equal(401, login(srv, chain).status)
            assert.equal(429, login(srv, chain).status)
            assert.equal(429, login(srv, { ["X-Forwarded-For"] = "198.51.100.77" }).status)
            srv:assert_stops_cleanly()
        end)

        -- The statuses of logins from each forwarded address, in order.
        local function statuses(srv, addresses)
            local out = {}
            for i, addr in ipairs(addresses) do out[i] = login(srv, { ["X-Forwarded-For"] = addr }).status end
            return out
        end

        it("counts an IPv6 client by its /64, an IPv4-mapped one as the IPv4 client", function()
            local srv = server.start {
                config = { workers = 2, auth = { trusted_proxies = "127.0.0.1" } },
                env = with { STEEPLE_AUTH_RATE_PER_MIN = "2" },
            }
            -- addresses of one /64 share the limit, however they are written
            assert.same({ 401, 401, 429, 429 }, statuses(srv, {
                "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::99", "2001:DB8:1:2:0:0:0:7" }))
            -- the next /64 is another client
            assert.same({ 401, 401, 429 }, statuses(srv, { "2001:db8:1:3::1", "2001:db8:1:3::2", "2001:db8:1:3::3" }))
            -- IPv4, plain or mapped into IPv6, is one client per address
            assert.same({ 401, 401, 429, 401 }, statuses(srv, {
                "198.51.100.20", "::ffff:198.51.100.20", "::ffff:c633:6414", "198.51.100.21" }))
            srv:assert_stops_cleanly()
        end)

        it("takes the IPv6 network's size from auth.ipv6_prefix", function()
            local srv = server.start {
                config = { workers = 2, auth = { trusted_proxies = "127.0.0.1", ipv6_prefix = 128 } },
                env = with { STEEPLE_AUTH_RATE_PER_MIN = "1" },
            }
            assert.same({ 401, 401, 429 }, statuses(srv, { "2001:db8:9::1", "2001:db8:9::2", "2001:db8:9::1" }))
            srv:assert_stops_cleanly()
            srv = server.start {
                config = { workers = 2, auth = { trusted_proxies = "127.0.0.1", ipv6_prefix = 48 } },
                env = with { STEEPLE_AUTH_RATE_PER_MIN = "1" },
            }
            assert.same({ 401, 429, 401 }, statuses(srv, { "2001:db8:9:1::1", "2001:db8:9:ffff::1", "2001:db8:a::1" }))
            srv:assert_stops_cleanly()
        end)

        it("limits a client that reaches the server over IPv6", function()
            local srv = server.start {
                config = { workers = 1, listen = "::1" }, env = with { STEEPLE_AUTH_RATE_PER_MIN = "2" }, wait = false,
            }
            local function login6()
                local res = http.request { host = "::1", port = srv.port, method = "POST", path = "/api/auth/login",
                    headers = { ["Content-Type"] = "application/json" }, timeout = 30,
                    body = '{"email":"nobody@example.org","password":"whatever password"}' }
                return res and res.status
            end
            assert.truthy(server.wait_until(function()
                local res = http.request { host = "::1", port = srv.port, path = "/health", timeout = 1 }
                return res and res.status == 200
            end, 10))
            assert.same({ 401, 401, 429 }, { login6(), login6(), login6() })
            srv:assert_stops_cleanly()
        end)
    end)

    describe("keys", function()
        it("production refuses to serve without keys, or with bad ones", function()
            local env = with { STEEPLE_ENV = "production", STEEPLE_JWT_SECRET = false, STEEPLE_DATA_KEY = false }
            local status, err = server.run_binary({ "serve" }, env, 10)
            assert.equal(1, status)
            assert.truthy(err:find("STEEPLE_JWT_SECRET and STEEPLE_DATA_KEY not set", 1, true), err)
            env.STEEPLE_JWT_SECRET = "too short"
            status, err = server.run_binary({ "serve" }, env, 10)
            assert.equal(1, status)
            assert.truthy(err:find("STEEPLE_JWT_SECRET (auth.jwt_secret): must be at least 32 bytes", 1, true), err)
            env.STEEPLE_JWT_SECRET = server.DEFAULT_ENV.STEEPLE_JWT_SECRET
            env.STEEPLE_DATA_KEY = "bm90IDMyIGJ5dGVz"
            status, err = server.run_binary({ "serve" }, env, 10)
            assert.equal(1, status)
            assert.truthy(err:find("STEEPLE_DATA_KEY (auth.data_key): must be 32 bytes in base64", 1, true), err)
            assert.is_nil(err:find("bm90IDMyIGJ5dGVz", 1, true)) -- the value is never echoed
        end)

        it("development makes keys once into var/dev-keys and reuses them", function()
            local dir = server.tmpdir()
            local port = server.free_port()
            local env = with { STEEPLE_ENV = "development", STEEPLE_JWT_SECRET = false, STEEPLE_DATA_KEY = false,
                PORT = tostring(port) }
            local cmd = string.format("cd %s && %s >%s/log 2>&1 & echo $!", server.quote(dir),
                server.command({ "serve", "--scripts", server.ROOT .. "/lua" }, env), server.quote(dir))
            local function serve_once()
                local p = io.popen(cmd)
                local pid = tonumber(p:read("a"):match("%d+"))
                p:close()
                local deadline = server.now() + 10
                local res
                repeat
                    socket.sleep(0.1)
                    res = http.request { port = port, path = "/health", timeout = 1 }
                until (res and res.status == 200) or server.now() > deadline
                os.execute("kill " .. pid)
                -- gone (port and key file let go) before the next start
                assert.truthy(server.wait_until(function()
                    return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= true
                end, 15), "the server did not stop")
                return res and res.status
            end
            assert.equal(200, serve_once())
            local keys = assert(server.read_file(dir .. "/var/dev-keys"))
            assert.truthy(keys:match("^STEEPLE_JWT_SECRET=[%w_-]+\nSTEEPLE_DATA_KEY=[%w+/]+=*\n$"), keys)
            local p = io.popen("stat -c %a " .. server.quote(dir .. "/var/dev-keys"))
            assert.equal("600", (p:read("a"):gsub("%s", "")))
            p:close()
            assert.equal(200, serve_once())
            assert.equal(keys, server.read_file(dir .. "/var/dev-keys"))
        end)
    end)

    it("bounds the hashes in flight: past the queue, logins get 503 and the server keeps serving", function()
        local srv = server.start { config = { threads = 1, limits = { request_timeout_s = 30 } }, env = ENV }
        local specs = {}
        for i = 1, 48 do
            specs[i] = { port = srv.port, method = "POST", path = "/api/auth/login", timeout = 30,
                headers = { ["Content-Type"] = "application/json" },
                body = '{"email":"flood' .. i .. '@example.org","password":"whatever password"}' }
        end
        local counts = {}
        for _, res in ipairs(http.concurrent(specs)) do
            local key = res.status and tostring(res.status) or tostring(res.err)
            counts[key] = (counts[key] or 0) + 1
            if res.status == 503 then
                assert.equal("service_unavailable", res.json.error.code)
                assert.equal("1", res.headers["retry-after"])
            end
        end
        assert.truthy((counts["503"] or 0) > 0, "no login was refused")
        assert.truthy((counts["401"] or 0) >= 16, "fewer than a queue's worth of logins were answered")
        assert.equal(48, (counts["503"] or 0) + (counts["401"] or 0))
        assert.equal(401, login(srv).status)
        srv:assert_stops_cleanly()
    end)

    it("hashes passwords with the configured argon2id parameters", function()
        local srv = server.start {
            config = { limits = { request_timeout_s = 30 }, auth = { argon2_memory_kib = 4096, argon2_iterations = 3 } },
            env = ENV,
        }
        local res = auth.post(srv, "/api/auth/register", auth.church("argon"))
        assert.equal(201, res.status, res.body)
        local dbname = (psql(REG_URL, "SELECT db_name FROM tenants WHERE id = '" .. res.json.tenantId .. "'"))
        local hash = psql(url_of(dbname), "SELECT password_hash FROM admins")
        assert.truthy(hash:find("^%$argon2id%$v=19%$m=4096,t=3,p=1%$"), hash)
        srv:assert_stops_cleanly()
    end)
end)
