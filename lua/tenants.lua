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
-- Every statement on the registry's tenants table (and outbox_tenants, its
-- marks) is here, one small function each; `reg` is a registry handle,
-- db.registry() or a transaction on it, and rows come back as the registry
-- names their columns:
--
--   tenants.by_id(reg, id)             -> { status, db_server, db_name, church_name, phone_number,
--                                         time_zone, help_text } or nil
--   tenants.by_phone(reg, phone)       -> { id, status, db_server, db_name, church_name, help_text } or nil
--   tenants.by_email_hash(reg, hash)   -> { tenant_id, admin_id, status, db_server, db_name } or nil
--                                         (the admin email's church, admin_emails joined)
--   tenants.list(reg)                  -> rows { id, status, created, db_server, db_name,
--                                         phone_number, church_name }, oldest first
--   tenants.databases(reg)             -> rows { db_server, db_name } of every tenant past provisioning
--   tenants.counts_by_server(reg)      -> rows { db_server, n }
--   tenants.insert_provisioning(reg, t) inserts { id, name, server, dbname, phone (or db.null) }
--   tenants.activate_provisioned(reg, id) -> true, or false when it is no longer provisioning
--   tenants.stale_provisioning(reg, age_s) -> rows { id, db_server, db_name } (100 at most)
--   tenants.delete_provisioning(reg, id)
--   tenants.set_status(reg, id, from, to) -> true, or false when it was not in `from`
--   tenants.delete(reg, id)
--   tenants.mark_outbox(reg, id)       marks a church that may have messages to send
--   tenants.unmark_outbox(reg, id)
--   tenants.outbox_marked(reg)         -> rows { tenant_id, db_server, db_name } (100 at most)
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

function M.by_id(reg, id)
    return reg:query(
        "SELECT status, db_server, db_name, church_name, phone_number, time_zone, help_text FROM tenants WHERE id = $1",
        id)[1]
end

function M.by_phone(reg, phone)
    return reg:query(
        "SELECT id, status, db_server, db_name, church_name, help_text FROM tenants WHERE phone_number = $1",
        phone)[1]
end

function M.by_email_hash(reg, hash)
    return reg:query([[
        SELECT e.tenant_id, e.admin_id, t.status, t.db_server, t.db_name
        FROM admin_emails e JOIN tenants t ON t.id = e.tenant_id
        WHERE e.email_hash = $1]], hash)[1]
end

function M.list(reg)
    return reg:query([[
        SELECT id, status, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS created,
               db_server, db_name, phone_number, church_name
        FROM tenants ORDER BY created_at, id]])
end

function M.databases(reg)
    return reg:query([[SELECT db_server, db_name FROM tenants
        WHERE status <> 'provisioning' ORDER BY db_name]])
end

function M.counts_by_server(reg)
    return reg:query("SELECT db_server, count(*) AS n FROM tenants GROUP BY db_server")
end

function M.insert_provisioning(reg, t)
    reg:query([[
        INSERT INTO tenants (id, church_name, status, db_server, db_name, phone_number)
        VALUES ($1, $2, 'provisioning', $3, $4, $5)]],
        t.id, t.name, t.server, t.dbname, t.phone)
end

function M.activate_provisioned(reg, id)
    return reg:query([[
        UPDATE tenants SET status = 'active', updated_at = now()
        WHERE id = $1 AND status = 'provisioning' RETURNING id]], id)[1] ~= nil
end

function M.stale_provisioning(reg, age_s)
    return reg:query([[
        SELECT id, db_server, db_name FROM tenants
        WHERE status = 'provisioning' AND created_at < now() - make_interval(secs => $1::float8)
        ORDER BY created_at LIMIT 100]], age_s)
end

function M.delete_provisioning(reg, id)
    reg:query("DELETE FROM tenants WHERE id = $1 AND status = 'provisioning'", id)
end

function M.set_status(reg, id, from, to)
    return reg:query([[
        UPDATE tenants SET status = $3, updated_at = now()
        WHERE id = $1 AND status = $2 RETURNING id]], id, from, to)[1] ~= nil
end

function M.delete(reg, id)
    reg:query("DELETE FROM tenants WHERE id = $1", id)
end

function M.mark_outbox(reg, id)
    reg:query([[
        INSERT INTO outbox_tenants (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING]], id)
end

function M.unmark_outbox(reg, id)
    reg:query("DELETE FROM outbox_tenants WHERE tenant_id = $1", id)
end

function M.outbox_marked(reg)
    return reg:query([[
        SELECT o.tenant_id, t.db_server, t.db_name FROM outbox_tenants o
        JOIN tenants t ON t.id = o.tenant_id WHERE t.status <> 'provisioning' LIMIT 100]])
end

local function fetch(id)
    local row = M.by_id(db.registry(), id)
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
    for _, row in ipairs(M.counts_by_server(db.registry())) do
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
