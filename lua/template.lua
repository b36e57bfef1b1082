-- The template database of a tenant server: migrated with sql/tenant, copied
-- by CREATE DATABASE for every new church.
--
--   template.ensure(server, name, plan) -> "ready" (it was there), "built", n
--       (this call made it; n migrations applied), or "busy" (another process
--       is building it right now: wait and ask again, or do without it);
--       raises when the build fails (nothing of it is left), when
--       db.pool_max is below 2 (the lock and the DDL each need a connection)
--       or when the server is reached through PgBouncer (see below)
--
-- A missing template is built under another name (name .. "_new"), migrated,
-- and only then renamed to name, so a template that exists is complete and
-- nobody copies a half-migrated one. The build holds an advisory lock in the
-- server's maintenance database (a transaction lock, so it ends with the
-- connection whatever happens), which makes one process of all the workers
-- and nodes build it; a build cut short leaves name .. "_new", which the next
-- build drops first. Everything goes through steeple.db: nothing blocks the
-- event loop. Through PgBouncer no build is tried: PgBouncer keeps its server
-- connections to the new database open, and ALTER DATABASE ... RENAME waits
-- for them to go (5 s a try) in vain; `steeple migrate tenants`, run against
-- the server's own address, builds it.

local config = require "steeple.config"
local db = require "db"
local migrate = require "migrate"
local pooler = require "pooler"
local steeple = require "steeple"

local pcall, error = pcall, error

local M = {}

-- Next to migrate.lua's 7310500001 (the migrations of one database).
local BUILD_LOCK_KEY <const> = 7310500002
-- A connection lets go of a database a moment after it is closed: the
-- rename waits for that, up to about 5 s.
local RENAME_TRIES <const> = 50

local function exists(conn, name)
    return #conn:query("SELECT 1 FROM pg_database WHERE datname = $1", name) > 0
end

-- ALTER DATABASE build RENAME TO name, once nobody is connected to build
-- (SQLSTATE 55006 while the backend of a closed connection still exits).
-- The names are fixed by the configuration's choices, never user input.
local function rename(server, build, name)
    local sql = 'ALTER DATABASE "' .. build .. '" RENAME TO "' .. name .. '"'
    local maintenance = db.maintenance(server)
    for attempt = 1, RENAME_TRIES do
        local ok, err = pcall(maintenance.query, maintenance, sql)
        if ok then return end
        if not (db.is_error(err) and err.sqlstate == "55006") or attempt == RENAME_TRIES then error(err, 0) end
        steeple.sleep(100)
    end
end

-- Makes build from nothing, migrates it and renames it to name; returns how
-- many migrations it applied. On failure build is dropped.
local function build_and_rename(server, build, name, plan)
    db.drop_database(server, build) -- the leftover of a build cut short, if any
    db.create_database(server, build)
    local ok, res = pcall(function()
        local applied = migrate.apply(db.pool(server, build), plan, "transaction")
        db.close_pool(server, build) -- a database is renamed only with nobody connected
        rename(server, build, name)
        return applied
    end)
    if not ok then
        pcall(db.drop_database, server, build) -- (which closes the pool too)
        error(res, 0)
    end
    return res
end

function M.ensure(server, name, plan)
    if config.db.pool_max < 2 then
        error("building the template needs db.pool_max of at least 2", 0)
    end
    if pooler.detect(db.maintenance(server)) then
        error("the server is reached through PgBouncer: run steeple migrate tenants against its own address "
            .. "to build the template", 0)
    end
    return db.transaction(db.maintenance(server), function(tx)
        local got = tx:query("SELECT pg_try_advisory_xact_lock($1) AS got", BUILD_LOCK_KEY)[1].got
        if not got then return "busy" end
        if exists(tx, name) then return "ready" end
        return "built", build_and_rename(server, name .. "_new", name, plan)
    end)
end

return M
