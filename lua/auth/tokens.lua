-- Access tokens (JWT, HS256) and refresh tokens (random, stored hashed in the
-- tenant's database, rotated on use, revoked by family).
--
--   tokens.access(admin)             -> token, expires_in; admin = { id, tenant_id, role }
--   tokens.verify(token)             -> claims { sub, tid, role, iat, exp, jti }, or nil, reason
--   tokens.issue_refresh(conn, tenant_id, admin_id [, family])
--                                    -> refresh token; conn is a handle or a pinned connection.
--                                    Without family the token starts a new one; with it, conn
--                                    is the transaction in which tokens.rotate locked it.
--   tokens.parse_refresh(token)      -> tenant_id, hash; or nil
--   tokens.rotate(tx, hash)          -> admin_id, family; or nil, "reused" | "revoked" | "unknown"
--                                    (tx: a transaction, which keeps the family locked)
--   tokens.revoke(handle, hash, admin_id)  ends the token's family (logout)
--
-- A refresh token reads "<tenant id>.<43 base64url characters>": the tenant
-- says which database holds it; only the SHA-256 of the random part is stored.
-- Each family has a row in refresh_token_families. Rotation and logout both
-- take that row's lock before they touch its tokens, so a logout cannot miss
-- a token that a concurrent refresh adds to the family.

local config = require "steeple.config"
local crypto = require "steeple.crypto"
local db = require "db"
local steeple = require "steeple"
local json = require "json"
local keys = require "auth.keys"
local uuid = require "uuid"

local type, floor, tointeger = type, math.floor, math.tointeger
local match = string.match

local M = {}

-- Clock skew allowed between the servers that issue and check tokens.
local LEEWAY_S <const> = 30

local ROLES <const> = { owner = true, admin = true }

local codec = json.new(4)

function M.access(admin)
    local now = floor(steeple.now())
    local ttl = config.auth.access_ttl_s
    local claims = {
        sub = admin.id, tid = admin.tenant_id, role = admin.role,
        iat = now, exp = now + ttl, jti = uuid.new(),
    }
    return crypto.jwt_sign(keys.jwt(), codec.encode(claims)), ttl
end

local function integer(v)
    return type(v) == "number" and tointeger(v) or nil
end

-- Checks the claims of a verified token; returns them or nil, reason.
local function check_claims(c)
    if type(c) ~= "table" then return nil, "claims" end
    local exp, iat = integer(c.exp), integer(c.iat)
    if not (uuid.valid(c.sub) and uuid.valid(c.tid) and ROLES[c.role] and exp and iat
            and type(c.jti) == "string") then
        return nil, "claims"
    end
    local now = steeple.now()
    if exp + LEEWAY_S < now then return nil, "expired" end
    if iat - LEEWAY_S > now then return nil, "not yet valid" end
    c.exp, c.iat = exp, iat
    return c
end

function M.verify(token)
    if type(token) ~= "string" then return nil, "malformed" end
    local payload, reason = crypto.jwt_verify(keys.jwt(), token)
    if payload == nil then return nil, reason end
    return check_claims(codec.decode_object(payload))
end

-- Refresh tokens --------------------------------------------------------------

local NEW_FAMILY <const> = [[
    WITH family AS (INSERT INTO refresh_token_families (id, admin_id) VALUES ($1, $2) RETURNING id)
    INSERT INTO refresh_tokens (family_id, admin_id, token_hash, expires_at)
    SELECT id, $2, $3, now() + make_interval(secs => $4) FROM family]]

local SAME_FAMILY <const> = [[
    INSERT INTO refresh_tokens (family_id, admin_id, token_hash, expires_at)
    VALUES ($1, $2, $3, now() + make_interval(secs => $4))]]

function M.issue_refresh(conn, tenant_id, admin_id, family)
    local secret = crypto.base64url_encode(crypto.random(32))
    conn:query(family and SAME_FAMILY or NEW_FAMILY,
        family or uuid.new(), admin_id, crypto.sha256_hex(secret), config.auth.refresh_ttl_s)
    return tenant_id .. "." .. secret
end

function M.parse_refresh(token)
    if type(token) ~= "string" or #token ~= 80 then return nil end
    local tenant_id, secret = match(token, "^([%x-]+)%.([%w_-]+)$")
    if not uuid.valid(tenant_id) or #secret ~= 43 then return nil end
    return tenant_id, crypto.sha256_hex(secret)
end

-- Revokes a family and its tokens; conn holds the family's lock, or waits
-- for it on the first statement, so the second sees every token of the
-- family that a rotation committed meanwhile.
local function revoke_family(conn, family)
    conn:query("UPDATE refresh_token_families SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        family)
    conn:query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL", family)
end

-- Locks the family of the token with this hash until tx ends. Returns the
-- family's id and whether it is revoked, or nil for an unknown token.
local function lock_family(tx, hash)
    local row = tx:query([[
        SELECT id, revoked_at IS NOT NULL AS revoked FROM refresh_token_families
        WHERE id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
        FOR UPDATE]], hash)[1]
    if row == nil then return nil end
    return row.id, row.revoked
end

-- Marks the token used, under its family's lock; a token used before
-- revokes its family.
function M.rotate(tx, hash)
    local family, revoked = lock_family(tx, hash)
    if family == nil then return nil, "unknown" end
    if revoked then return nil, "revoked" end
    local rows = tx:query([[
        UPDATE refresh_tokens SET used_at = now()
        WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
        RETURNING admin_id]], hash)
    if rows[1] then return rows[1].admin_id, family end
    local used = tx:query("SELECT used_at IS NOT NULL AS used FROM refresh_tokens WHERE token_hash = $1", hash)[1]
    if used and used.used then
        revoke_family(tx, family)
        return nil, "reused"
    end
    return nil, "unknown"
end

function M.revoke(handle, hash, admin_id)
    local row = handle:query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND admin_id = $2",
        hash, admin_id)[1]
    if row == nil then return end
    db.transaction(handle, function(tx) revoke_family(tx, row.family_id) end)
end

return M
