-- Signing in and staying signed in: login with per-account lockout, refresh
-- token rotation, logout.
--
--   login.login(input)            -> the session body of API.md; input = { email, password }
--   login.refresh(token)          -> the session body with new tokens
--   login.logout(session, token)  ends the refresh token's family
--   login.session_body(conn, tenant_id, admin [, family])
--                                 -> { tenantId, admin, accessToken, refreshToken, expiresIn }
--
-- Lockout: after auth.max_failures consecutive failures an account is locked
-- for auth.lock_initial_s, doubling with each further lock up to
-- auth.lock_max_s; a locked account gets account_locked even with the right
-- password; a success clears it all.
--
-- Each attempt is claimed before its password is checked: one UPDATE counts
-- it as a failure, and the claim that reaches auth.max_failures locks the
-- account at once. However many attempts run at the same time (the check
-- yields to the thread pool), no more than auth.max_failures passwords are
-- tried per lock, and no connection is held while a password is hashed. A
-- success then clears the count and the lock from the current row.

local config = require "steeple.config"
local metrics = require "steeple.metrics"
local log = require "steeple.log"
local db = require "db"
local errors = require "errors"
local tenants = require "tenants"
local admins = require "auth.admins"
local tokens = require "auth.tokens"

local M = {}

metrics.describe("steeple_login_failures_total", "counter",
    "Logins refused for a wrong email or password (locked accounts not included).")

function M.session_body(conn, tenant_id, admin, family)
    local refresh = tokens.issue_refresh(conn, tenant_id, admin.id, family)
    local access, ttl = tokens.access { id = admin.id, tenant_id = tenant_id, role = admin.role }
    return {
        tenantId = tenant_id, admin = admins.json(admin),
        accessToken = access, refreshToken = refresh, expiresIn = ttl,
    }
end

local function invalid_credentials()
    metrics.inc("steeple_login_failures_total")
    errors.raise("invalid_credentials")
end

-- Enough doublings to reach the longest auth.lock_max_s (604800 s) from the
-- shortest auth.lock_initial_s (1 s): the lock duration never overflows.
local LOCK_COUNT_MAX <const> = 20

-- Claims one attempt on the admin's password, counted as a failure until
-- the password proves right; the claim that reaches auth.max_failures locks
-- the account. Returns the password hash, or nil when the account is locked
-- (or gone).
local function claim_attempt(handle, id)
    local auth = config.auth
    local row = handle:query([[
        UPDATE admins SET
            failed_attempts = CASE WHEN failed_attempts + 1 >= $2 THEN 0 ELSE failed_attempts + 1 END,
            lock_count = CASE WHEN failed_attempts + 1 >= $2 THEN least(lock_count + 1, $5) ELSE lock_count END,
            locked_until = CASE WHEN failed_attempts + 1 >= $2
                THEN now() + make_interval(secs =>
                    least($3::float8 * power(2, least(lock_count, $5)), $4::float8))
                ELSE locked_until END
        WHERE id = $1 AND (locked_until IS NULL OR locked_until <= now())
        RETURNING password_hash]],
        id, auth.max_failures, auth.lock_initial_s, auth.lock_max_s, LOCK_COUNT_MAX)[1]
    return row and row.password_hash
end

-- An attempt that could not be claimed: the account is locked, or the
-- registry names an admin the tenant does not have.
local function refuse_unclaimed(handle, id, password)
    local admin = admins.get(handle, id)
    if admin == nil then
        admins.burn_password(password)
        invalid_credentials()
    end
    -- without locked_for_s, the lock ended a moment ago
    errors.raise("account_locked", { headers = { ["Retry-After"] = admin.locked_for_s or 1 } })
end

local function clear_failures(handle, id)
    handle:query([[
        UPDATE admins SET failed_attempts = 0, lock_count = 0, locked_until = NULL
        WHERE id = $1 AND (failed_attempts <> 0 OR lock_count <> 0 OR locked_until IS NOT NULL)]], id)
end

-- The registry's entry for an email: { tenant_id, admin_id, status, db_server, db_name } or nil.
local function find(email)
    return tenants.by_email_hash(db.registry(), admins.email_hash(email))
end

function M.login(input)
    local found = find(input.email)
    if found == nil or found.status == "provisioning" then
        admins.burn_password(input.password) -- an unknown email takes as long as a wrong password
        invalid_credentials()
    end
    if found.status ~= "active" then errors.raise("tenant_unavailable") end
    local handle = db.pool(found.db_server, found.db_name)
    local hash = claim_attempt(handle, found.admin_id)
    if hash == nil then refuse_unclaimed(handle, found.admin_id, input.password) end
    if not admins.verify_password(hash, input.password) then invalid_credentials() end
    clear_failures(handle, found.admin_id)
    local admin = admins.get(handle, found.admin_id)
    if admin == nil then invalid_credentials() end -- removed while the password was checked
    return M.session_body(handle, found.tenant_id, admin)
end

local function unauthorized(reason)
    log.debug("refresh token refused", { reason = reason })
    errors.raise("unauthorized")
end

function M.refresh(token)
    local tenant_id, hash = tokens.parse_refresh(token)
    if tenant_id == nil then unauthorized("malformed") end
    local entry = tenants.lookup(tenant_id)
    if entry == nil then unauthorized("no such tenant") end
    if entry.status ~= "active" then errors.raise("tenant_unavailable") end
    local handle = db.pool(entry.server, entry.dbname)
    local body, reason = db.transaction(handle, function(tx)
        local admin_id, family = tokens.rotate(tx, hash)
        if admin_id == nil then return nil, family end
        local admin = admins.get(tx, admin_id)
        if admin == nil then return nil, "admin removed" end
        return M.session_body(tx, tenant_id, admin, family)
    end)
    if body == nil then
        if reason == "reused" then
            log.warn("a rotated refresh token was used again: its family is revoked", { tenant = tenant_id })
        end
        unauthorized(reason)
    end
    return body
end

function M.logout(session, token)
    local tenant_id, hash = tokens.parse_refresh(token)
    if tenant_id == session.tenant_id then tokens.revoke(session.db, hash, session.admin_id) end
end

return M
