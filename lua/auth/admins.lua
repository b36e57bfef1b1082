-- Admins: the people who sign in for a church. Their rows live in the
-- tenant's database (email encrypted, argon2id password hash); the registry
-- holds only a keyed hash of each email, which makes an email unique across
-- every church and lets login find the church.
--
--   admins.email_hash(email)            -> bytea parameter (keyed BLAKE2b)
--   admins.hash_password(pw)            -> argon2id string (thread pool)
--   admins.verify_password(hash, pw)    -> true/false (thread pool)
--   admins.burn_password(pw)            a verify against a dummy hash: as slow as a real one
--   admins.insert(conn, tenant_id, a)   inserts a = { id, email, name, password_hash, role }
--                                       into the tenant database (conn: handle or connection)
--   admins.reserve_email(conn, email, tenant_id, admin_id)
--                                       the registry row; raises email_taken
--   admins.get(handle, id)              -> { id, email, name, role, ... } or nil
--   admins.list(handle)                 -> list of admins, oldest first
--   admins.json(a)                      -> the API's admin object
--   admins.add(session, input)          -> a new admin of the session's tenant

local crypto = require "steeple.crypto"
local db = require "db"
local errors = require "errors"
local keys = require "auth.keys"
local uuid = require "uuid"

local error, pcall, ipairs, tostring = error, pcall, ipairs, tostring

local M = {}

function M.email_hash(email)
    return db.bytea(crypto.blind_index(keys.email_index(), email))
end

-- The email is sealed with the admin's id as associated data: a ciphertext
-- copied onto another row does not open.
local function seal_email(email, admin_id)
    return db.bytea(crypto.seal(keys.email_seal(), email, admin_id))
end

local function open_email(box, admin_id)
    local email = crypto.open(keys.email_seal(), box, admin_id)
    if email == nil then error("an admin's email does not decrypt (wrong STEEPLE_DATA_KEY?)", 0) end
    return email
end

-- The thread pool's queue is bounded: a full queue answers 503, so that a
-- login flood cannot grow memory without limit.
local function pool_result(value, err)
    if value == nil then
        if err == "busy" then errors.raise("service_unavailable", { headers = { ["Retry-After"] = 1 } }) end
        error("password hashing failed: " .. tostring(err), 0)
    end
    return value
end

function M.hash_password(pw)
    return pool_result(crypto.password_hash(pw))
end

function M.verify_password(hash, pw)
    return pool_result(crypto.password_verify(hash, pw))
end

local dummy_hash

function M.burn_password(pw)
    if dummy_hash == nil then
        dummy_hash = M.hash_password(crypto.base64url_encode(crypto.random(18)))
        return
    end
    M.verify_password(dummy_hash, pw)
end

function M.insert(conn, a)
    conn:query([[
        INSERT INTO admins (id, email_hash, email_enc, name, password_hash, role)
        VALUES ($1, $2, $3, $4, $5, $6)]],
        a.id, M.email_hash(a.email), seal_email(a.email, a.id), a.name, a.password_hash, a.role)
end

function M.reserve_email(conn, email, tenant_id, admin_id)
    local ok, err = pcall(conn.query, conn,
        "INSERT INTO admin_emails (email_hash, tenant_id, admin_id) VALUES ($1, $2, $3)",
        M.email_hash(email), tenant_id, admin_id)
    if ok then return end
    if db.is_unique_violation(err, "admin_emails_pkey") then errors.raise("email_taken") end
    error(err, 0)
end

local COLUMNS <const> = [[
    id, email_enc, name, role, password_hash, failed_attempts, lock_count, created_at,
    CASE WHEN locked_until > now()
         THEN greatest(1, ceil(extract(epoch FROM locked_until - now())))::integer END AS locked_for_s]]

local function decode(row)
    row.email = open_email(row.email_enc, row.id)
    row.email_enc = nil
    if row.locked_for_s == db.null then row.locked_for_s = nil end
    return row
end

function M.get(handle, id)
    local row = handle:query("SELECT " .. COLUMNS .. " FROM admins WHERE id = $1", id)[1]
    return row and decode(row)
end

function M.list(handle)
    local rows = handle:query("SELECT " .. COLUMNS .. " FROM admins ORDER BY created_at, id")
    for _, row in ipairs(rows) do decode(row) end
    return rows
end

function M.json(a)
    return { id = a.id, email = a.email, name = a.name, role = a.role }
end

-- A new admin for the session's tenant: the registry's email row first (its
-- primary key decides a race), then the tenant's row; if that fails the
-- email row is removed again.
function M.add(session, input)
    local a = {
        id = uuid.new(), email = input.email, name = input.name, role = input.role,
        password_hash = M.hash_password(input.password),
    }
    M.reserve_email(db.registry(), a.email, session.tenant_id, a.id)
    local ok, err = pcall(M.insert, session.db, a)
    if not ok then
        pcall(db.registry().query, db.registry(), "DELETE FROM admin_emails WHERE admin_id = $1", a.id)
        error(err, 0)
    end
    return a
end

return M
