-- Tenants: from a tenant id to its database handle.
--
--   tenants.get(id)         -> handle of the tenant's database; raises
--                              errors "not_found" for an unknown or malformed id
--                              and "tenant_unavailable" unless it is active
--   tenants.lookup(id)      -> { id, status, server, dbname, name, phone, time_zone, help_text } or nil
--                              (cached; phone is db.null for a church without one)
--   tenants.forget(id)      drops the cached entry (after a status change)
--   tenants.place()         -> the server key a new tenant's database goes on
--                              (the key the registry records: see core/db_config.h)
--
-- Registry entries are cached per worker for tenants.cache_ttl_s; when the
-- registry cannot be reached a cached entry is used past its time, so known
-- churches keep working through a registry outage. The database pools behind
-- the handles are the core's LRU (tenants.capacity).

local db = require "db"
local errors = require "errors"
local config = require "steeple.config"
local uuid = require "uuid"
local ttl_cache = require "ttl_cache"

local error, ipairs = error, ipairs

local M = {}

local cache = ttl_cache.new(config.tenants.cache_ttl_s, config.tenants.capacity * 10)

-- True for the id format (a UUID).
M.valid_id = uuid.valid

local function fetch(id)
    local row = db.registry():query(
        "SELECT status, db_server, db_name, church_name, phone_number, time_zone, help_text FROM tenants WHERE id = $1",
        id)[1]
    if row == nil then return false end
    return { id = id, status = row.status, server = row.db_server, dbname = row.db_name,
             name = row.church_name, phone = row.phone_number, time_zone = row.time_zone, help_text = row.help_text }
end

-- The tenant's registry entry, or nil when there is none.
function M.lookup(id)
    if not M.valid_id(id) then return nil end
    return cache:get(id, fetch)
end

function M.forget(id)
    cache:forget(id)
end

-- The server a new tenant's database goes on: the tenant server holding the
-- fewest tenants (ties: the first in configuration order). Tenants recorded
-- under a named server's address (before it had a name) count for it.
function M.place()
    local servers = db.servers(true)
    if #servers == 0 then error("no tenant database server is configured", 0) end
    local counts = {}
    for _, row in ipairs(db.registry():query(
        "SELECT db_server, count(*) AS n FROM tenants GROUP BY db_server")) do
        local key = db.server_key(row.db_server) or row.db_server
        counts[key] = (counts[key] or 0) + row.n
    end
    local best, fewest = nil, math.huge
    for _, server in ipairs(servers) do
        local n = counts[server] or 0
        if n < fewest then best, fewest = server, n end
    end
    return best
end

-- The database handle of an active tenant.
function M.get(id)
    local entry = M.lookup(id)
    if entry == nil then errors.raise("not_found") end
    if entry.status ~= "active" then errors.raise("tenant_unavailable") end
    return db.pool(entry.server, entry.dbname)
end

-- Changes a church's settings: changes = { name?, time_zone?, help_text? }
-- (nil keeps a value). Returns its new entry, or nil when it has none; this
-- worker's cache holds the new entry at once (others' within
-- tenants.cache_ttl_s). Raises validation_failed, changing nothing, for a
-- time zone PostgreSQL does not know (pg_timezone_names).
function M.update_church(id, changes)
    local tz = changes.time_zone or db.null
    local row = db.registry():query([[
        UPDATE tenants SET church_name = coalesce($2, church_name), time_zone = coalesce($3, time_zone),
            help_text = coalesce($4, help_text)
        WHERE id = $1 AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $3))
        RETURNING id]], id, changes.name or db.null, tz, changes.help_text or db.null)[1]
    if row == nil and changes.time_zone ~= nil then
        errors.raise("validation_failed", { fields = { timeZone = "must be a known IANA time zone name" } })
    end
    cache:forget(id)
    return M.lookup(id)
end

return M
