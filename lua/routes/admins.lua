-- The signed-in admin and the church's admins.

local v = require "validate"
local errors = require "errors"
local session = require "auth.session"
local admins = require "auth.admins"

local NEW_ADMIN = v.object {
    email = v.email(),
    password = v.password { min = 10, max = 128 },
    name = v.text { min = 1, max = 200 },
    role = v.one_of { values = { "admin", "owner" }, default = "admin" },
}

local function church(entry)
    return { id = entry.id, name = entry.name, phoneNumber = entry.phone }
end

return {
    ["/api/me"] = {
        GET = function(req)
            local s = session.require(req)
            local admin = admins.get(s.db, s.admin_id)
            if admin == nil then errors.raise("unauthorized") end
            return {
                status = 200, tenant = s.tenant_id,
                json = { tenantId = s.tenant_id, admin = admins.json(admin), church = church(s.tenant) },
            }
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
