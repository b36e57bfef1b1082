-- Database helpers over the core's steeple.db: transactions, error tests.
--
--   db.registry(), db.pool(server, dbname), db.servers(tenants_only), db.server_key(key),
--   db.null, db.bytea
--       as in steeple.db
--   db.transaction(handle, function(tx) ... end)
--       runs the function with a pinned connection inside BEGIN/COMMIT; any
--       error rolls back and is raised again. Returns the function's results.
--   db.is_error(e), db.is_unavailable(e), db.is_transient(e),
--   db.is_unique_violation(e [, constraint])
--   db.create_database(server, name [, template])
--       as the core's, waiting while the template is in use (SQLSTATE 55006)
--   db.drop_database(server, name), db.maintenance(server), db.close_pool(server, name)
--   db.deadline(ms)   limits the rest of the request's database work (see steeple.db)

local core = require "steeple.db"
local steeple = require "steeple"

local type, pcall, error = type, pcall, error
local getmetatable = getmetatable
local unpack, pack = table.unpack, table.pack

local M = {
    registry = core.registry,
    pool = core.pool,
    servers = core.servers,
    server_key = core.server_key,
    null = core.null,
    bytea = core.bytea,
    maintenance = core.maintenance,
    drop_database = core.drop_database,
    close_pool = core.close_pool,
    deadline = core.deadline,
}

-- True for the error values the core raises.
function M.is_error(e)
    local mt = type(e) == "table" and getmetatable(e)
    return mt and mt.__name == "steeple.db.error" or false
end

-- True when the database could not be reached in time (answer 503).
function M.is_unavailable(e)
    return M.is_error(e) and e.kind == "unavailable"
end

-- SQLSTATEs of failures that say nothing about the statement: the same
-- statement may succeed later (connection lost, server shutting down or
-- short of resources, statement or lock timeout, serialization failure,
-- deadlock).
local TRANSIENT_CLASSES <const> = { ["08"] = true, ["53"] = true, ["57"] = true }
local TRANSIENT_STATES <const> = { ["40001"] = true, ["40P01"] = true, ["55P03"] = true }

-- True when trying the same work again later may succeed: unavailable, or
-- one of the SQLSTATEs above.
function M.is_transient(e)
    if not M.is_error(e) then return false end
    if e.kind == "unavailable" then return true end
    local state = e.sqlstate
    return type(state) == "string" and (TRANSIENT_STATES[state] or TRANSIENT_CLASSES[state:sub(1, 2)]) or false
end

-- True for a unique violation (23505), optionally of one constraint.
function M.is_unique_violation(e, constraint)
    return M.is_error(e) and e.sqlstate == "23505" and (constraint == nil or e.constraint == constraint)
end


-- CREATE DATABASE copies the template only while nobody is connected to it
-- (the migrator, briefly): it waits and tries again, up to about 5 s.
function M.create_database(server, name, template)
    for attempt = 1, 50 do
        local ok, err = pcall(core.create_database, server, name, template)
        if ok then return true end
        if not (M.is_error(err) and err.sqlstate == "55006") or attempt == 50 then error(err, 0) end
        steeple.sleep(100)
    end
end

-- Runs fn(tx) in a transaction on a connection of handle; returns fn's
-- results after COMMIT, or rolls back and raises fn's error.
function M.transaction(handle, fn)
    local tx <close> = handle:acquire()
    tx:query("BEGIN")
    local results = pack(pcall(fn, tx))
    if results[1] then
        tx:query("COMMIT")
        return unpack(results, 2, results.n)
    end
    -- a failed ROLLBACK leaves the connection outside the pool: it is closed
    pcall(tx.query, tx, "ROLLBACK")
    error(results[2], 0)
end


return M
