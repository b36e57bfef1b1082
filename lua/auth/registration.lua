-- Registering a church: a tenant, its own database and its owner admin,
-- all or nothing.
--
--   registration.register(input)  -> the 201 body of API.md
--   registration.sweep()          -> number of registrations cut short that it undid
--
-- Steps: hash the password (before holding anything); in one registry
-- transaction insert the tenant (status provisioning) and its email row, so
-- that unique constraints decide races (email_taken, phone_taken); create
-- the database from the template and bring it up to date; insert the owner
-- and a refresh token; mark the tenant active. A missing template is built
-- first (template.lua); while another process builds it, the new database is
-- made empty and migrated instead. A failure after the
-- reservation drops the database and deletes the registry rows. A process
-- that dies half-way leaves a provisioning tenant, which sweep() (the janitor)
-- undoes once it is older than tenants.provisioning_timeout_s.
--
-- Each registration makes a database: a worker runs at most
-- tenants.max_provisioning at once and answers 503 service_unavailable (with
-- Retry-After) past it, so that a burst of registrations cannot swamp a
-- database server. The slot is held by a to-be-closed value, so it is given
-- back however the registration ends: an answer, an error, the client gone
-- (the core closes the request's coroutine) or the request deadline.

local config = require "steeple.config"
local log = require "steeple.log"
local db = require "db"
local church = require "church"
local errors = require "errors"
local migrate = require "migrate"
local template = require "template"
local tenants = require "tenants"
local uuid = require "uuid"
local admins = require "auth.admins"
local login = require "auth.login"

local error, pcall, ipairs, setmetatable = error, pcall, ipairs, setmetatable
local gsub = string.gsub

local describe = errors.describe

local M = {}

local TEMPLATE <const> = config.db.template ~= "none" and config.db.template or nil

-- Registrations in progress in this worker (this script state: after a
-- reload, the old state's last ones are not counted here).
local in_progress = 0

local Slot = {
    __close = function(slot)
        if slot.held then
            slot.held = false
            in_progress = in_progress - 1
        end
    end,
}

-- A slot of tenants.max_provisioning, to hold in a <close> variable; raises
-- service_unavailable when every slot is taken.
local function take_slot()
    if in_progress >= config.tenants.max_provisioning then
        log.info("registration refused: too many in progress", { inProgress = in_progress })
        errors.raise("service_unavailable", { headers = { ["Retry-After"] = 1 } })
    end
    in_progress = in_progress + 1
    return setmetatable({ held = true }, Slot)
end

local plan
local function tenant_plan()
    plan = plan or migrate.plan(config.db.migrations_dir .. "/tenant")
    return plan
end


local function reserve(t, input)
    local ok, err = pcall(db.transaction, db.registry(), function(tx)
        tenants.insert_provisioning(tx, { id = t.id, name = input.churchName, server = t.server,
            dbname = t.dbname, phone = input.phoneNumber or db.null })
        admins.reserve_email(tx, input.email, t.id, t.owner.id)
    end)
    if ok then return end
    if db.is_unique_violation(err, "tenants_phone_number_key") then errors.raise("phone_taken") end
    error(err, 0)
end

-- Drops the database and deletes the registry rows of a tenant that never
-- became active. Returns true, or false when something is left for later.
local function undo(id, server, dbname)
    local ok, err = pcall(function()
        db.close_pool(server, dbname)
        db.drop_database(server, dbname)
        tenants.delete_provisioning(db.registry(), id)
    end)
    if not ok then
        log.warn("undoing a registration failed; the janitor tries again", { tenant = id, error = describe(err) })
    end
    return ok
end

-- True for CREATE DATABASE's "template database does not exist".
local function missing_template(err)
    return db.is_error(err) and err.sqlstate == "3D000"
end

-- Builds the server's missing template; true when it is there now.
local function template_ready(server)
    local ok, state = pcall(template.ensure, server, TEMPLATE, tenant_plan())
    if not ok then
        log.warn("building the template failed; migrating the new database instead",
            { server = server, error = describe(state) })
        return false
    end
    if state == "built" then log.info("template built", { server = server, template = TEMPLATE }) end
    if state == "busy" then
        log.info("the template is being built elsewhere; migrating the new database instead", { server = server })
    end
    return state ~= "busy"
end

-- Creates the church's database: a copy of the template, or an empty one
-- (no template configured, or it is missing and being built elsewhere).
local function create(t)
    if TEMPLATE then
        local ok, err = pcall(db.create_database, t.server, t.dbname, TEMPLATE)
        if ok then return end
        if not missing_template(err) then error(err, 0) end
        if template_ready(t.server) then return db.create_database(t.server, t.dbname, TEMPLATE) end
    end
    db.create_database(t.server, t.dbname)
end

local function provision(t, input)
    create(t)
    local handle = db.pool(t.server, t.dbname)
    migrate.apply(handle, tenant_plan(), "transaction") -- an empty database, or a template behind the files
    admins.insert(handle, t.owner)
    local body = login.session_body(handle, t.id, t.owner)
    if not tenants.activate_provisioned(db.registry(), t.id) then
        error("the registration was undone while it ran (provisioning timeout)", 0)
    end
    body.church = church.json { id = t.id, name = input.churchName, phone = input.phoneNumber or db.null }
    return body
end

function M.register(input)
    local slot <close> = take_slot() -- luacheck: ignore 211 (held until register ends)
    local id = uuid.new()
    local t = {
        id = id,
        dbname = "tenant_" .. gsub(id, "-", ""),
        owner = {
            id = uuid.new(), email = input.email, name = input.adminName, role = "owner",
            password_hash = admins.hash_password(input.password),
        },
        server = tenants.place(),
    }
    reserve(t, input)
    local ok, body = pcall(provision, t, input)
    if not ok then
        log.warn("registration failed; undoing it", { tenant = id, error = describe(body) })
        undo(id, t.server, t.dbname)
        error(body, 0)
    end
    log.info("church registered", { tenant = id, server = t.server })
    return body
end

function M.sweep()
    local rows = tenants.stale_provisioning(db.registry(), config.tenants.provisioning_timeout_s)
    local undone = 0
    for _, row in ipairs(rows) do
        if undo(row.id, row.db_server, row.db_name) then
            undone = undone + 1
            log.info("janitor undid a registration cut short", { tenant = row.id })
        end
    end
    return undone
end

return M
