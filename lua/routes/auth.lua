-- /api/auth/*: register, login, refresh, logout. Every one of them is rate
-- limited per client address first (auth.rate_per_min).

local v = require "validate"
local client = require "auth.client"
local session = require "auth.session"
local login = require "auth.login"
local registration = require "auth.registration"

local REGISTER = v.object {
    churchName = v.text { min = 2, max = 200 },
    email = v.email(),
    password = v.password { min = 10, max = 128 },
    adminName = v.text { min = 1, max = 200 },
    phoneNumber = v.phone { optional = true },
}

-- Login accepts any stored password length; the bound keeps hashing cheap.
local LOGIN = v.object {
    email = v.email(),
    password = v.password { min = 1, max = 128 },
}

local REFRESH = v.object {
    refreshToken = v.text { min = 1, max = 200 },
}

return {
    ["/api/auth/register"] = {
        POST = function(req)
            client.limit(req)
            local input = REGISTER(req:json())
            return { status = 201, json = registration.register(input) }
        end,
    },
    ["/api/auth/login"] = {
        POST = function(req)
            client.limit(req)
            local input = LOGIN(req:json())
            local body = login.login(input)
            return { status = 200, json = body, tenant = body.tenantId }
        end,
    },
    ["/api/auth/refresh"] = {
        POST = function(req)
            client.limit(req)
            local input = REFRESH(req:json())
            local body = login.refresh(input.refreshToken)
            return { status = 200, json = body, tenant = body.tenantId }
        end,
    },
    ["/api/auth/logout"] = {
        POST = function(req)
            client.limit(req)
            local s = session.require(req)
            local input = REFRESH(req:json())
            login.logout(s, input.refreshToken)
            return { status = 204, tenant = s.tenant_id }
        end,
    },
}
