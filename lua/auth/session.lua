-- The signed-in admin behind a request's bearer token.
--
--   session.require(req [, role]) -> { tenant_id, admin_id, role, db, tenant }
--       (tenant: the church's registry entry, see tenants.lookup)
--       raises unauthorized (no, malformed, forged or expired token; a tenant
--       that is gone), tenant_unavailable (a suspended tenant), forbidden (the
--       admin lacks role)
--
-- The token's reasons for refusal go to the log at debug level, never to the
-- client.

local tokens = require "auth.tokens"
local tenants = require "tenants"
local errors = require "errors"
local db = require "db"
local log = require "steeple.log"

local match = string.match

local M = {}

local function refuse(reason)
    log.debug("bearer token refused", { reason = reason })
    errors.raise("unauthorized", { headers = { ["WWW-Authenticate"] = "Bearer" } })
end

function M.require(req, role)
    local header = req.headers["authorization"]
    local token = header and match(header, "^[Bb]earer +([%w._-]+) *$")
    if token == nil then refuse(header and "not a bearer token" or "no authorization header") end
    local claims, reason = tokens.verify(token)
    if claims == nil then refuse(reason) end
    local entry = tenants.lookup(claims.tid)
    if entry == nil then refuse("no such tenant") end
    if entry.status ~= "active" then errors.raise("tenant_unavailable") end
    if role and claims.role ~= role then errors.raise("forbidden") end
    return {
        tenant_id = claims.tid, admin_id = claims.sub, role = claims.role,
        db = db.pool(entry.server, entry.dbname), tenant = entry,
    }
end

return M
