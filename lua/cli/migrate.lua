-- steeple migrate registry | tenants [--concurrency N]
--
-- registry: applies sql/registry to the registry database.
-- tenants: applies sql/tenant to the template of every tenant server (built
-- if missing, see template.lua) and to every tenant database, N at a time;
-- carries on past a failing database and exits 1 if any failed.
-- Both refuse a server reached through PgBouncer: the migrations' session
-- lock and the template (which nobody may be connected to when it is copied
-- or renamed) need the server's own address.

local db = require "db"
local errors = require "errors"
local migrate = require "migrate"
local pooler = require "pooler"
local config = require "steeple.config"
local steeple = require "steeple"
local template = require "template"
local tenants = require "tenants"
local out = require("cli.out").line

local ipairs, pcall, tonumber = ipairs, pcall, tonumber

local describe = errors.describe

local M = {}

-- Raises when a configured server is reached through PgBouncer (a server
-- that cannot be reached is left to the migrations to report).
local function direct_only()
    for _, server in ipairs(db.servers()) do
        local ok, mode = pcall(pooler.detect, db.maintenance(server))
        if ok and mode then
            error(server .. " is reached through PgBouncer (" .. mode .. " pooling): migrations connect "
                .. "directly; set DATABASE_URL (and STEEPLE_TENANT_DATABASE_URLS) to the server's own address", 0)
        end
    end
end

local function registry(dir)
    local plan = migrate.plan(dir .. "/registry")
    local n = migrate.apply(db.registry(), plan)
    out("registry: %d applied, %d already applied", n, #plan - n)
    return 0
end

-- Builds the template database of a server when it is missing, waiting
-- while another process builds it; returns how many migrations the build
-- applied (0 when it was there).
local function ensure_template(server, name, plan)
    while true do
        local state, applied = template.ensure(server, name, plan)
        if state == "built" then
            out("%s: created %s", server, name)
            return applied
        end
        if state == "ready" then return 0 end
        steeple.sleep(200)
    end
end

local function targets(plan)
    local list = {}
    if config.db.template ~= "none" then
        for _, server in ipairs(db.servers(true)) do
            local ok, res = pcall(ensure_template, server, config.db.template, plan)
            list[#list + 1] = { server = server, name = config.db.template, template = true,
                built = ok and res or nil, failure = not ok and res or nil }
        end
    end
    for _, row in ipairs(tenants.databases(db.registry())) do
        list[#list + 1] = { server = row.db_server, name = row.db_name }
    end
    return list
end

local function all_tenants(dir, concurrency)
    local plan = migrate.plan(dir .. "/tenant")
    local list = targets(plan)
    local state = { next = 1, done = 0, updated = 0, failed = 0 }

    local function one(t)
        local ok, res = false, t.failure
        if not t.failure then
            ok, res = pcall(migrate.apply, db.pool(t.server, t.name), plan)
            if t.template then db.close_pool(t.server, t.name) end -- nothing may hold the template
            if ok then res = res + (t.built or 0) end -- a template built just now counts as updated
        end
        state.done = state.done + 1
        if ok then
            if res > 0 then state.updated = state.updated + 1 end
            out("[%d/%d] %s/%s: %d applied", state.done, #list, t.server, t.name, res)
        else
            state.failed = state.failed + 1
            out("[%d/%d] %s/%s: FAILED: %s", state.done, #list, t.server, t.name, describe(res))
        end
    end

    local function runner()
        while state.next <= #list do
            local t = list[state.next]
            state.next = state.next + 1
            one(t)
        end
    end

    for _ = 1, math.min(concurrency, #list) do steeple.spawn(runner) end
    while state.done < #list do steeple.sleep(20) end
    out("tenants: %d databases, %d updated, %d up to date, %d failed",
        #list, state.updated, #list - state.updated - state.failed, state.failed)
    return state.failed > 0 and 1 or 0
end

local function usage()
    io.stderr:write("usage: steeple migrate registry | tenants [--concurrency N]\n")
    return 2
end

function M.main(args)
    local what, concurrency = args[1], 4
    for i = 2, #args do
        if args[i] == "--concurrency" and tonumber(args[i + 1]) then
            concurrency = math.tointeger(tonumber(args[i + 1])) or 0
        elseif args[i - 1] ~= "--concurrency" then
            return usage()
        end
    end
    if concurrency < 1 or concurrency > 64 then return usage() end
    local dir = config.db.migrations_dir
    if what ~= "registry" and what ~= "tenants" then return usage() end
    local ok, res = pcall(function()
        direct_only()
        if what == "registry" then return registry(dir) end
        return all_tenants(dir, concurrency)
    end)
    if ok then return res end
    io.stderr:write("steeple migrate: ", describe(res), "\n")
    return 1
end

return M
