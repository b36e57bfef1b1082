-- Migrations: SQL files applied in the order of an explicit list, each in
-- its own transaction, recorded with a SHA-256 checksum in
-- schema_migrations, under an advisory lock so that two runs on one database
-- never interleave. A file changed after it was applied stops the run.
--
--   migrate.plan(dir)                  -> list of { name, sql, checksum } (raises on a bad list)
--   migrate.apply(handle, plan [, "transaction"]) -> number applied (raises on failure)
--       the lock is a session lock on the migrator's own direct connection;
--       "transaction": a transaction lock held by a second connection of the
--       pool for the run (request paths, which may reach the database through
--       PgBouncer in transaction mode, where a session lock or SET would stay
--       on a server session other clients get); it falls back to the session
--       lock when db.pool_max is 1
--   migrate.status(handle, plan)       -> { applied = n, pending = n, changed = { names } }

local config = require "steeple.config"
local crypto = require "steeple.crypto"

local type, ipairs, error, pcall, format = type, ipairs, error, pcall, string.format
local io_open, loadfile = io.open, loadfile

local M = {}

-- The migration lock of a database (session or transaction level).
local LOCK_KEY <const> = 7310500001
-- A migration may run for a long time; the migrator waits for the lock too.
local MIGRATION_TIMEOUT_S <const> = 3600

local function read_file(path)
    local f, err = io_open(path, "rb")
    if not f then error(format("cannot read %s: %s", path, err), 0) end
    local text = f:read("a")
    f:close()
    return text
end

-- Returns the migrations of dir (dir/init.lua lists the files) with their
-- text and checksum.
function M.plan(dir)
    local chunk, err = loadfile(dir .. "/init.lua", "t", {})
    if not chunk then error(format("cannot load %s/init.lua: %s", dir, err), 0) end
    local ok, list = pcall(chunk)
    if not ok or type(list) ~= "table" then
        error(format("%s/init.lua must return a list of file names", dir), 0)
    end
    local plan, seen = {}, {}
    for i, name in ipairs(list) do
        if type(name) ~= "string" or not name:match("^%d%d%d%d_[a-z0-9_]+%.sql$") then
            error(format("%s/init.lua: entry %d is not a file name like 0001_name.sql", dir, i), 0)
        end
        if seen[name] then error(format("%s/init.lua lists %s twice", dir, name), 0) end
        seen[name] = true
        local sql = read_file(dir .. "/" .. name)
        plan[i] = { name = name, sql = sql, checksum = crypto.sha256_hex(sql) }
    end
    return plan
end

local function applied_map(conn)
    local rows = conn:query("SELECT name, checksum FROM schema_migrations")
    local map = {}
    for _, row in ipairs(rows) do map[row.name] = row.checksum end
    return map
end

local function check_unchanged(plan, applied)
    for _, m in ipairs(plan) do
        local sum = applied[m.name]
        if sum and sum ~= m.checksum then
            error(format("migration %s was changed after it was applied (checksum %s, now %s); "
                .. "add a new migration instead", m.name, sum:sub(1, 12), m.checksum:sub(1, 12)), 0)
        end
    end
end

local function apply_one(conn, m)
    conn:exec("BEGIN")
    local ok, err = pcall(function()
        conn:exec("SET LOCAL statement_timeout = 0")
        conn:exec(m.sql)
        conn:query("INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", m.name, m.checksum)
        conn:exec("COMMIT")
    end)
    if not ok then
        pcall(conn.exec, conn, "ROLLBACK")
        local msg = type(err) == "table" and (err.message or err.kind) or tostring(err)
        error(format("migration %s failed: %s", m.name, msg), 0)
    end
end

-- Runs fn(conn) holding the migration lock of the handle's database.
local function session_locked(handle, fn)
    local conn <close> = handle:acquire()
    conn:set_timeout(MIGRATION_TIMEOUT_S)
    conn:exec("SET statement_timeout = 0")
    conn:query("SELECT pg_advisory_lock($1)", LOCK_KEY)
    local ok, res = pcall(fn, conn)
    pcall(conn.query, conn, "SELECT pg_advisory_unlock($1)", LOCK_KEY)
    pcall(conn.exec, conn, "RESET statement_timeout")
    if not ok then error(res, 0) end
    return res
end

-- As session_locked, the lock held by an open transaction of a second
-- connection: it ends with that transaction (or the connection), and a
-- pooler keeps the transaction on one server session. Each statement
-- timeout lifted is lifted for its own transaction (SET LOCAL).
local function transaction_locked(handle, fn)
    local lock <close> = handle:acquire()
    lock:set_timeout(MIGRATION_TIMEOUT_S)
    lock:exec("BEGIN")
    local ok, res = pcall(function()
        lock:exec("SET LOCAL statement_timeout = 0")
        lock:query("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        local conn <close> = handle:acquire()
        conn:set_timeout(MIGRATION_TIMEOUT_S)
        return fn(conn)
    end)
    -- a failed ROLLBACK leaves the connection outside the pool: it is closed
    pcall(lock.exec, lock, "ROLLBACK")
    if not ok then error(res, 0) end
    return res
end

-- Applies the pending migrations of plan to the handle's database; returns
-- how many were applied.
function M.apply(handle, plan, lock)
    local locked = (lock == "transaction" and config.db.pool_max >= 2) and transaction_locked or session_locked
    return locked(handle, function(conn)
        conn:exec([[CREATE TABLE IF NOT EXISTS schema_migrations (
            name text PRIMARY KEY,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())]])
        local applied = applied_map(conn)
        check_unchanged(plan, applied)
        local n = 0
        for _, m in ipairs(plan) do
            if not applied[m.name] then
                apply_one(conn, m)
                n = n + 1
            end
        end
        return n
    end)
end

-- Compares the database with plan without changing anything.
function M.status(handle, plan)
    local rows = handle:query([[SELECT to_regclass('schema_migrations') IS NOT NULL AS present]])
    local applied = {}
    if rows[1].present then
        for _, row in ipairs(handle:query("SELECT name, checksum FROM schema_migrations")) do
            applied[row.name] = row.checksum
        end
    end
    local st = { applied = 0, pending = 0, changed = {} }
    for _, m in ipairs(plan) do
        local sum = applied[m.name]
        if sum == nil then
            st.pending = st.pending + 1
        else
            st.applied = st.applied + 1
            if sum ~= m.checksum then st.changed[#st.changed + 1] = m.name end
        end
    end
    return st
end

return M
