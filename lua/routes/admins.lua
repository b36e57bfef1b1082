-- The signed-in admin and the church's admins.

local v = require "validate"
local errors = require "errors"
local session = require "auth.session"
local admins = require "auth.admins"
local church = require "church"
local tenants = require "tenants"

local NEW_ADMIN = v.object {
    email = v.email(),
    password = v.password { min = 10, max = 128 },
    name = v.text { min = 1, max = 200 },
    role = v.one_of { values = { "admin", "owner" }, default = "admin" },
}

local CHURCH_SETTINGS = v.object {
    name = v.text { min = 2, max = 200, optional = true },
    timeZone = v.text { min = 1, max = 64, optional = true },
    helpText = v.text { min = 0, max = 300, optional = true },
}

return {
    ["/api/me"] = {
        GET = function(req)
            local s = session.require(req)
            local admin = admins.get(s.db, s.admin_id)
            if admin == nil then errors.raise("unauthorized") end
            return {
                status = 200, tenant = s.tenant_id,
                json = { tenantId = s.tenant_id, admin = admins.json(admin), church = church.json(s.tenant) },
            }
        end,
    },
    ["/api/church"] = {
        PATCH = function(req)
            local s = session.require(req, "owner")
            local input = CHURCH_SETTINGS(req:json())
            local entry = tenants.update_church(s.tenant_id,
                { name = input.name, time_zone = input.timeZone, help_text = input.helpText })
            if entry == nil then errors.raise("unauthorized") end
            return { status = 200, tenant = s.tenant_id, json = { church = church.json(entry) } }
        end,
    },
    ["/api/admins"] = {
        GET = function(req)
            local s = session.require(req)
            local list = {}
            for i, a in ipairs(admins.list(s.db)) do list[i] = admins.json(a) end
            return { status = 200, tenant = s.tenant_id, json = { admins = list } }
        end,
        POST = function(req)
            local s = session.require(req, "owner")
            local input = NEW_ADMIN(req:json())
            local admin = admins.add(s, input)
            return { status = 201, tenant = s.tenant_id, json = { admin = admins.json(admin) } }
        end,
    },
}
