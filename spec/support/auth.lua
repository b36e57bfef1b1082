-- Helpers for the specs of /api/auth/*, /api/me and /api/admins.
--
--   auth.post(srv, path, body [, headers])   JSON POST (body: table or raw string)
--   auth.get(srv, path, token)                GET with a bearer token
--   auth.call(srv, method, path, token [, body])
--                                             a request with a bearer token (or none);
--                                             body: a table (sent as JSON), a string or nil
--   auth.fields(res)                          the fields map of a 400 validation_failed answer
--   auth.church(n [, extra])                  a valid registration body, unique per n
--   auth.forge(header, claims, secret)        a JWT (header: JSON text) signed by openssl
--   auth.b64url(s)                            base64url without padding
--   auth.tenant_databases(psql, url)          names of the tenant databases on a cluster
--   auth.registry(prefix)                     a new, migrated registry (and template):
--                                             { name, url, env }; reg:count(sql), reg:drop(),
--                                             reg:church(srv, n [, extra]) registers church n:
--                                             { id, token, number, db, registered }
local http = require "support.http"
local server = require "support.server"
local pg = require "support.pg"
local cjson = require "cjson"
local secrets = require "support.secrets"
local luassert = require "luassert"

local M = {}

local STAMP = tostring(os.time() % 1000000)
M.STAMP = STAMP

function M.post(srv, path, body, headers)
    local h = { ["Content-Type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    local res = assert(http.request {
        port = srv.port, method = "POST", path = path, headers = h, timeout = 60,
        body = type(body) == "string" and body or cjson.encode(body),
    })
    if type(res.json) == "table" then secrets.add(res.json.accessToken, res.json.refreshToken) end
    return res
end

function M.get(srv, path, token)
    return assert(http.request {
        port = srv.port, path = path, timeout = 30,
        headers = token and { Authorization = "Bearer " .. token } or nil,
    })
end

function M.call(srv, method, path, token, body)
    local headers = { Authorization = token and ("Bearer " .. token) or nil }
    if body ~= nil then headers["Content-Type"] = "application/json" end
    return assert(http.request { port = srv.port, method = method, path = path, headers = headers, timeout = 30,
        body = body ~= nil and (type(body) == "string" and body or cjson.encode(body)) or nil })
end

function M.fields(res)
    luassert.equal(400, res.status, res.body)
    luassert.equal("validation_failed", res.json.error.code)
    return res.json.error.fields
end

function M.church(n, extra)
    local body = {
        churchName = "Church " .. n, email = "admin" .. n .. "." .. STAMP .. "@example.org",
        password = "password of church " .. n, adminName = "Admin " .. n,
    }
    for k, v in pairs(extra or {}) do body[k] = v end
    secrets.add(body.password, body.email)
    return body
end

local shell = server.capture

function M.b64url(s)
    local path = server.tmpdir() .. "/in"
    server.write_file(path, s)
    local out = shell("base64 -w0 " .. server.quote(path))
    return (out:gsub("%s", ""):gsub("=+$", ""):gsub("+", "-"):gsub("/", "_"))
end

function M.forge(header, claims, secret)
    local signing = M.b64url(header) .. "." .. M.b64url(cjson.encode(claims))
    local path = server.tmpdir() .. "/in"
    server.write_file(path, signing)
    local sig = shell(string.format("openssl dgst -sha256 -mac HMAC -macopt key:%s -binary %s",
        server.quote(secret), server.quote(path)))
    return signing .. "." .. M.b64url(sig)
end

function M.tenant_databases(psql, url)
    local out = psql(url, "SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\_%' ORDER BY 1")
    local names = {}
    for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
    return names
end

local Registry = {}
Registry.__index = Registry

function M.registry(prefix)
    local name = prefix .. "_" .. STAMP
    local reg = setmetatable({ name = name, url = pg.url_of(name) }, Registry)
    reg.env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false }
    pg.psql(pg.BASE_URL, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)")
    assert(select(2, pg.psql(pg.BASE_URL, "CREATE DATABASE " .. name)))
    assert(server.run_binary({ "migrate", "registry" }, reg.env, 60) == 0, "migrate registry failed")
    assert(server.run_binary({ "migrate", "tenants" }, reg.env, 120) == 0, "migrate tenants failed")
    return reg
end

function Registry:count(sql)
    return tonumber((pg.psql(self.url, sql)))
end

function Registry:church(srv, n, extra)
    local res = M.post(srv, "/api/auth/register", M.church(n, extra))
    luassert.equal(201, res.status, res.body)
    local id = res.json.tenantId
    return { id = id, token = res.json.accessToken, number = res.json.church.phoneNumber, registered = res.json,
        db = (pg.psql(self.url, "SELECT db_name FROM tenants WHERE id = '" .. id .. "'")) }
end

-- Drops every tenant database the registry lists, the registry and the template.
function Registry:drop()
    local drops = {}
    for name in pg.psql(self.url, "SELECT db_name FROM tenants"):gmatch("tenant_%w+") do
        drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE);"
    end
    drops[#drops + 1] = "DROP DATABASE IF EXISTS " .. self.name .. " WITH (FORCE);"
    drops[#drops + 1] = "DROP DATABASE IF EXISTS steeple_template WITH (FORCE);"
    pg.psql_file(pg.BASE_URL, table.concat(drops, "\n"))
end

return M
