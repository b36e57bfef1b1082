-- A bounded per-worker cache of database lookups with a time to live. While
-- the database is unavailable, an expired entry stands in for the answer:
-- known entries keep working through an outage.
--
--   local c = ttl_cache.new(ttl_s, max_entries)
--   c:get(key, fetch)  -> value, or nil when fetch said there is none;
--                         fetch(key) returns a value or false (known absent,
--                         cached too) and may raise a database error
--   c:forget(key)

local steeple = require "steeple"
local db = require "db"

local pcall, error, setmetatable = pcall, error, setmetatable

local M = {}

local Cache = {}
Cache.__index = Cache

function M.new(ttl_s, max_entries)
    return setmetatable({ ttl = ttl_s, max = max_entries, entries = {}, size = 0 }, Cache)
end

function Cache:remember(key, value, now)
    if self.entries[key] == nil then
        self.size = self.size + 1
        if self.size > self.max then -- bounded: start over rather than grow
            self.entries, self.size = {}, 1
        end
    end
    self.entries[key] = { value = value, expires = now + self.ttl }
end

function Cache:get(key, fetch)
    local now = steeple.clock()
    local hit = self.entries[key]
    if hit and hit.expires > now then return hit.value or nil end
    local ok, value = pcall(fetch, key)
    if not ok then
        if hit and db.is_unavailable(value) then return hit.value or nil end -- stale beats down
        error(value, 0)
    end
    self:remember(key, value, now)
    return value or nil
end

function Cache:forget(key)
    if self.entries[key] ~= nil then
        self.entries[key] = nil
        self.size = self.size - 1
    end
end

return M
