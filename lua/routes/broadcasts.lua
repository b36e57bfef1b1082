-- Broadcasts (Bearer): create, read, and the moves pause, resume and cancel.
-- The dispatcher (broadcasts/dispatch.lua) does the sending.
--
-- The text is checked with its merge fields: every recipient's text must
-- have 1 to 1600 characters, counting {{firstName}} and {{lastName}} as
-- empty (or their fallback) at the least and as a name's 100 characters at
-- the most, and {{churchName}} as the church's name. sendAt is RFC 3339, at
-- most SEND_AT_MAX_DAYS ahead; a time past (or none) sends now.

local errors = require "errors"
local paging = require "paging"
local steeple = require "steeple"
local uuid = require "uuid"
local v = require "validate"
local session = require "auth.session"
local merge = require "broadcasts.merge"
local store = require "broadcasts.store"

local ipairs, tonumber, floor = ipairs, tonumber, math.floor
local match, upper = string.match, string.upper

local TEXT_MAX <const> = 1600
local NAME_MAX <const> = 100
local SEND_AT_MAX_DAYS <const> = 180
local DAY_S <const> = 86400

local NEW_BROADCAST = v.object {
    text = v.text { min = 1, max = TEXT_MAX * 4, keep_space = true },
    mediaUrls = v.array { of = v.url(), max = 10, optional = true,
        message = "must be an array of at most 10 URLs", item_message = "must hold http(s) URLs" },
    lists = v.array { of = v.id(), max = 100, message = "must be an array of 1 to 100 list ids",
        item_message = "must hold list ids" },
    sendAt = v.text { min = 1, max = 64, optional = true },
}

-- Days from 1970-01-01 to the civil date y-m-d (proleptic Gregorian).
local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

local DAYS_IN <const> = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

-- Seconds since the epoch of an RFC 3339 date-time, or nil.
local function rfc3339(s)
    local y, mo, d, h, mi, sec, frac, zone = match(s,
        "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)([Zz+-][%d:]*)$")
    if y == nil or (frac ~= "" and #frac < 2) then return nil end
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if mo < 1 or mo > 12 or d < 1 or d > DAYS_IN[mo] or h > 23 or mi > 59 or sec > 60 then return nil end
    local offset = 0
    if zone ~= "Z" and zone ~= "z" then
        local sign, zh, zm = match(zone, "^([+-])(%d%d):(%d%d)$")
        if sign == nil or tonumber(zh) > 23 or tonumber(zm) > 59 then return nil end
        offset = (tonumber(zh) * 60 + tonumber(zm)) * 60
        if sign == "-" then offset = -offset end
    end
    return days_from_civil(y, mo, d) * DAY_S + h * 3600 + mi * 60 + sec - offset
end

local function invalid(field, message)
    errors.raise("validation_failed", { fields = { [field] = message } })
end

-- The checked input of POST /api/broadcasts.
local function new_broadcast(s, body)
    local input = NEW_BROADCAST(body)
    if #input.lists == 0 then invalid("lists", "must be an array of 1 to 100 list ids") end
    local template, err = merge.parse(input.text)
    if template == nil then invalid("text", err) end
    local least, most = merge.bounds(template, { churchName = s.tenant.name },
        { firstName = NAME_MAX, lastName = NAME_MAX })
    if least < 1 then invalid("text", "would be empty for a contact without the names it uses") end
    if most > TEXT_MAX then
        invalid("text", "may be at most " .. TEXT_MAX .. " characters with the merge fields filled in "
            .. "(names count up to " .. NAME_MAX .. " characters)")
    end
    if input.sendAt then
        local at = rfc3339(input.sendAt)
        if at == nil then invalid("sendAt", "must be an RFC 3339 date and time, e.g. 2026-12-24T18:00:00Z") end
        if at - steeple.now() > SEND_AT_MAX_DAYS * DAY_S then
            invalid("sendAt", "must be at most " .. SEND_AT_MAX_DAYS .. " days ahead")
        end
    end
    local media = {}
    for i, url in ipairs(input.mediaUrls or {}) do media[i] = { url = url } end
    return { text = input.text, media = media, lists = input.lists, send_at = input.sendAt and upper(input.sendAt) }
end

local function ok(s, status, body)
    return { status = status, tenant = s.tenant_id, json = body }
end

local function path_id(req)
    local id = req.params.id
    if not uuid.valid(id) then errors.raise("not_found") end
    return id
end

local function mover(action)
    return {
        POST = function(req)
            local s = session.require(req)
            return ok(s, 200, { broadcast = store.move(s, path_id(req), action) })
        end,
        media_type = false,
    }
end

return {
    ["/api/broadcasts"] = {
        GET = function(req)
            local s = session.require(req)
            local limit, cursor = paging.args(req)
            local list, next_cursor = store.page(s.db, limit, cursor)
            return ok(s, 200, { broadcasts = list, nextCursor = paging.next_json(next_cursor) })
        end,
        POST = function(req)
            local s = session.require(req)
            return ok(s, 201, { broadcast = store.create(s, new_broadcast(s, req:json())) })
        end,
    },
    ["/api/broadcasts/{id}"] = {
        GET = function(req)
            local s = session.require(req)
            local b = store.get(s.db, path_id(req))
            if b == nil then errors.raise("not_found") end
            return ok(s, 200, { broadcast = b })
        end,
    },
    ["/api/broadcasts/{id}/pause"] = mover("pause"),
    ["/api/broadcasts/{id}/resume"] = mover("resume"),
    ["/api/broadcasts/{id}/cancel"] = mover("cancel"),
}
