-- steeple tenants list | suspend ID | activate ID | drop ID --yes
--
-- list: every church, one line each (id, status, created, database, phone, name).
-- suspend / activate: a suspended church's admins get 503 tenant_unavailable
--   (running servers notice within tenants.cache_ttl_s); its webhooks are
--   still stored.
-- drop: deletes the church: its database and its registry rows, for good.
--   Refuses without --yes.
-- Exit status: 0 done, 1 failed (unknown id, database error), 2 usage (drop
-- without --yes included).

local db = require "db"
local errors = require "errors"
local tenants = require "tenants"
local uuid = require "uuid"
local out = require("cli.out").line

local ipairs, pcall, tostring = ipairs, pcall, tostring
local format = string.format

local describe = errors.describe

local M = {}

local function fail(fmt, ...)
    io.stderr:write("steeple tenants: ", format(fmt, ...), "\n")
    return 1
end


local function text(v)
    return v == db.null and "-" or tostring(v)
end

local function list()
    local rows = tenants.list(db.registry())
    out("%-36s  %-12s  %-16s  %-46s  %-16s  %s", "ID", "STATUS", "CREATED (UTC)", "DATABASE", "PHONE", "NAME")
    for _, r in ipairs(rows) do
        out("%-36s  %-12s  %-16s  %-46s  %-16s  %s", r.id, r.status, r.created,
            r.db_server .. "/" .. r.db_name, text(r.phone_number), r.church_name)
    end
    out("%d tenants", #rows)
    return 0
end

-- Moves a tenant from one status to another; 1 when it is not in `from`.
local function set_status(id, from, to)
    if tenants.set_status(db.registry(), id, from, to) then
        out("%s: %s", id, to)
        return 0
    end
    local row = tenants.by_id(db.registry(), id)
    if row == nil then return fail("no tenant %s", id) end
    if row.status == to then
        out("%s: already %s", id, to)
        return 0
    end
    return fail("%s is %s, not %s", id, row.status, from)
end

local function drop(id)
    local row = tenants.by_id(db.registry(), id)
    if row == nil then return fail("no tenant %s", id) end
    -- database first: if that fails the registry row still says where it is
    db.drop_database(row.db_server, row.db_name)
    tenants.delete(db.registry(), id)
    out("%s: dropped (database %s/%s)", id, row.db_server, row.db_name)
    return 0
end

local function usage()
    io.stderr:write("usage: steeple tenants list | suspend ID | activate ID | drop ID --yes\n")
    return 2
end

local function run(args)
    local cmd, id = args[1], args[2]
    if cmd == "list" and #args == 1 then return list() end
    if cmd == nil or id == nil then return usage() end
    if not uuid.valid(id) then return fail("'%s' is not a tenant id", id) end
    if cmd == "suspend" and #args == 2 then return set_status(id, "active", "suspended") end
    if cmd == "activate" and #args == 2 then return set_status(id, "suspended", "active") end
    if cmd == "drop" then
        if args[3] ~= "--yes" or #args ~= 3 then
            io.stderr:write("steeple tenants: drop deletes the church's database for good: add --yes\n")
            return 2
        end
        return drop(id)
    end
    return usage()
end

function M.main(args)
    local ok, res = pcall(run, args)
    if ok then return res end
    return fail("%s", describe(res))
end

return M
