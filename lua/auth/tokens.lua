-- Access tokens (JWT, HS256) and refresh tokens (random, stored hashed in the
-- tenant's database, rotated on use, revoked by family).
--
--   tokens.access(admin)             -> token, expires_in; admin = { id, tenant_id, role }
--   tokens.verify(token)             -> claims { sub, tid, role, iat, exp, jti }, or nil, reason
--   tokens.issue_refresh(conn, tenant_id, admin_id [, family])
--                                    -> refresh token; conn is a handle or a pinned connection
--   tokens.parse_refresh(token)      -> tenant_id, hash; or nil
--   tokens.rotate(handle, hash)      -> admin_id, family; or nil, "reused" | "unknown"
--   tokens.revoke(handle, hash, admin_id)  ends the token's family (logout)
--
-- A refresh token reads "<tenant id>.<43 base64url characters>": the tenant
-- says which database holds it; only the SHA-256 of the random part is stored.

local config = require "steeple.config"
local crypto = require "steeple.crypto"
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

function M.issue_refresh(conn, tenant_id, admin_id, family)
    local secret = crypto.base64url_encode(crypto.random(32))
    conn:query([[
        INSERT INTO refresh_tokens (family_id, admin_id, token_hash, expires_at)
        VALUES ($1, $2, $3, now() + make_interval(secs => $4))]],
        family or uuid.new(), admin_id, crypto.sha256_hex(secret), config.auth.refresh_ttl_s)
    return tenant_id .. "." .. secret
end

function M.parse_refresh(token)
    if type(token) ~= "string" or #token ~= 80 then return nil end
    local tenant_id, secret = match(token, "^([%x-]+)%.([%w_-]+)$")
    if not uuid.valid(tenant_id) or #secret ~= 43 then return nil end
    return tenant_id, crypto.sha256_hex(secret)
end

-- Marks the token used; a token used before revokes its family.
function M.rotate(handle, hash)
    local rows = handle:query([[
        UPDATE refresh_tokens SET used_at = now()
        WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
        RETURNING admin_id, family_id]], hash)
    if rows[1] then return rows[1].admin_id, rows[1].family_id end
    local seen = handle:query(
        "SELECT family_id, used_at IS NOT NULL AS used FROM refresh_tokens WHERE token_hash = $1", hash)[1]
    if seen and seen.used then
        handle:query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
            seen.family_id)
        return nil, "reused"
    end
    return nil, "unknown"
end

function M.revoke(handle, hash, admin_id)
    handle:query([[
        UPDATE refresh_tokens SET revoked_at = now()
        WHERE revoked_at IS NULL AND family_id =
            (SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND admin_id = $2)]],
        hash, admin_id)
end


return M
