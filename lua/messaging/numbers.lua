-- Which church a phone number belongs to: the registry's unique index on
-- tenants.phone_number, with a per-worker cache in front of it (hits and
-- misses, tenants.cache_ttl_s; known numbers keep routing through a registry
-- outage).
--
--   numbers.tenant(phone)  -> { id, status, server, dbname, name, help_text } or nil (no church has it);
--                             raises a database error when the registry cannot say
--   numbers.forget(phone)

local config = require "steeple.config"
local db = require "db"
local tenants = require "tenants"
local ttl_cache = require "ttl_cache"

local M = {}

local cache = ttl_cache.new(config.tenants.cache_ttl_s, 10000)

local function fetch(phone)
    local row = tenants.by_phone(db.registry(), phone)
    if row == nil then return false end
    return { id = row.id, status = row.status, server = row.db_server, dbname = row.db_name,
             name = row.church_name, help_text = row.help_text }
end

function M.tenant(phone)
    return cache:get(phone, fetch)
end

function M.forget(phone)
    cache:forget(phone)
end

return M
