-- steeple doctor: checks every precondition of serving, one line each, with
-- the fix for each failure; exits 1 if any check fails.

local db = require "db"
local errors = require "errors"
local migrate = require "migrate"
local pooler = require "pooler"
local config = require "steeple.config"
local crypto = require "steeple.crypto"
local keys = require "auth.keys"
local out = require("cli.out").line

local ipairs, pcall, tonumber = ipairs, pcall, tonumber
local format = string.format

local describe = errors.describe

local M = {}

local MIN_VERSION <const> = 130000


local function hex(bytes)
    return (bytes:gsub(".", function(c) return format("%02x", c:byte()) end))
end

-- Runs check(); prints "ok" with its note, "FAIL" with the error and fix, or
-- "WARN" with the fix when check returns a note and true (a warning).
local function checker()
    local failed, warned = 0, 0
    return function(label, fix, check)
        local ok, note, warning = pcall(check)
        if ok and warning then
            warned = warned + 1
            out("WARN  %s: %s\n      fix: %s", label, note, fix)
        elseif ok then
            out("ok    %s%s", label, note and (": " .. note) or "")
        else
            failed = failed + 1
            out("FAIL  %s: %s\n      fix: %s", label, describe(note), fix)
        end
        return ok
    end, function() return failed, warned end
end

-- The server's connection settings: max_connections, and the room left
-- for roles without superuser (max_connections - superuser_reserved_connections).
local function connection_room(h)
    local row = h:query("SELECT current_setting('max_connections')::int AS max, "
        .. "current_setting('superuser_reserved_connections')::int AS reserved")[1]
    return row.max - row.reserved, row.max, row.reserved
end

-- Every node keeps its own budget of db.server_max_connections to each
-- server: cluster.nodes of them must fit in the server's room (a warning,
-- since doctor cannot see the other nodes' settings). One node: the check
-- above says it all.
local function cluster_budget_check(check, server, h)
    local nodes, each = config.cluster.nodes, config.db.server_max_connections
    if nodes == 1 then return end
    check(server .. ": cluster.nodes x db.server_max_connections fits max_connections",
        "lower db.server_max_connections on every node (budget per node = the server's room / nodes), "
            .. "or raise max_connections on the server",
        function()
            local room, max, reserved = connection_room(h)
            local total = nodes * each
            if total > room then
                return format("%d nodes x db.server_max_connections %d = %d connections, but the server "
                    .. "allows %d (max_connections %d - %d reserved): set db.server_max_connections to at "
                    .. "most %d, or max_connections to at least %d", nodes, each, total, room, max, reserved,
                    room // nodes, total + reserved), true
            end
            return format("%d nodes x %d = %d of %d", nodes, each, total, room)
        end)
end

-- Which servers are reached through PgBouncer (server -> pool mode): the
-- template check keeps away from those (see template_check).
local pooled = {}

-- PgBouncer in front of the server: transaction pooling needs
-- db.prepared_statements = false; migrations need the direct address.
local function pooler_check(check, server)
    check(server .. ": reached directly, or through PgBouncer with db.prepared_statements = false",
        "set db.prepared_statements = false: PgBouncer in transaction mode does not carry a prepared "
            .. "statement from one transaction to the next",
        function()
            local h = db.maintenance(server)
            local mode = pooler.detect(h)
            if mode == nil then return "directly" end
            pooled[server] = mode
            if mode == "transaction" and config.db.prepared_statements then
                error("PgBouncer in front (transaction pooling) and db.prepared_statements is true", 0)
            end
            -- PgBouncer drops the startup option that carries db.statement_timeout_ms
            local timeout = h:query("SELECT current_setting('statement_timeout') AS t")[1].t
            return format("through PgBouncer (%s pooling); run steeple migrate against the server's own "
                .. "address, not this one; the server's statement_timeout is %s (set it on the role: "
                .. "PgBouncer does not pass db.statement_timeout_ms)", mode, timeout)
        end)
end

local function server_checks(check, server, workers)
    local h = db.maintenance(server)
    local reachable = check(server .. ": connects, PostgreSQL 13 or later",
        "check the URL of this server and that PostgreSQL runs and accepts this role",
        function()
            local row = h:query("SELECT current_setting('server_version_num')::int AS num, "
                .. "current_setting('server_version') AS version")[1]
            if row.num < MIN_VERSION then error("PostgreSQL " .. row.version .. " is too old", 0) end
            return "PostgreSQL " .. row.version
        end)
    if not reachable then return end

    check(server .. ": the role can CREATE DATABASE",
        "ALTER ROLE <role> CREATEDB (or use a role that has it); hosted services may need a plan that allows it",
        function()
            local name = "steeple_doctor_" .. hex(crypto.random(6))
            db.create_database(server, name)
            db.drop_database(server, name)
            return "created and dropped " .. name
        end)

    pooler_check(check, server)

    check(server .. ": max_connections covers db.server_max_connections",
        "raise max_connections on the server or lower db.server_max_connections",
        function()
            local room, max, reserved = connection_room(h)
            local want = config.db.server_max_connections
            if want > room then
                error(format("db.server_max_connections is %d but the server allows %d "
                    .. "(max_connections %d - %d reserved)", want, room, max, reserved), 0)
            end
            return format("%d of %d (%d workers, %d each)", want, room, workers,
                want // workers)
        end)
    cluster_budget_check(check, server, h)
end

local function registry_check(check, dir)
    check("registry: migrations applied and unchanged", "run: steeple migrate registry", function()
        local plan = migrate.plan(dir .. "/registry")
        local st = migrate.status(db.registry(), plan)
        if #st.changed > 0 then
            error("applied migrations were changed since: " .. table.concat(st.changed, ", "), 0)
        end
        if st.pending > 0 then error(st.pending .. " migrations not applied", 0) end
        return format("%d applied", st.applied)
    end)
end

local function template_check(check, server, dir)
    local name = config.db.template
    check(server .. ": template " .. name .. " present and current", "run: steeple migrate tenants", function()
        local rows = db.maintenance(server):query("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if #rows == 0 then error("missing", 0) end
        -- a connection to the template through PgBouncer stays open in its
        -- pool and stops CREATE DATABASE from copying the template
        if pooled[server] then return "present; its migrations are checked directly, not through PgBouncer" end
        local st = migrate.status(db.pool(server, name), migrate.plan(dir .. "/tenant"))
        db.close_pool(server, name)
        if #st.changed > 0 or st.pending > 0 then
            error(format("%d migrations pending, %d changed", st.pending, #st.changed), 0)
        end
        return format("%d applied", st.applied)
    end)
end

function M.main()
    local check, failures = checker()
    local workers = config.workers > 0 and config.workers or tonumber(io.popen("nproc"):read("l")) or 1
    local servers = db.servers()
    if #servers == 0 then
        check("DATABASE_URL is set", "set DATABASE_URL to the registry database's URL", function()
            error("no database is configured", 0)
        end)
        return 1
    end
    check("auth keys: STEEPLE_JWT_SECRET and STEEPLE_DATA_KEY are set and valid",
        "set both (production); development makes them into var/dev-keys", function()
            keys.jwt()
            keys.email_index()
        end)
    for _, server in ipairs(servers) do server_checks(check, server, workers) end
    local dir = config.db.migrations_dir
    registry_check(check, dir)
    if config.db.template ~= "none" then
        for _, server in ipairs(db.servers(true)) do template_check(check, server, dir) end
    end
    local failed, warned = failures()
    if failed > 0 then
        out("%d checks failed", failed)
        return 1
    end
    out(warned > 0 and format("all checks passed, %d warnings", warned) or "all checks passed")
    return 0
end

return M
