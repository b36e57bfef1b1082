-- Contacts and lists (Bearer). Ids in a path that are not ids, or not of
-- the signed-in church, are 404 not_found; list ids in a body or a query
-- string that are not the church's lists are 400 validation_failed.
--
-- POST /api/contacts with the number of a deleted contact brings that
-- contact back (201); with consent opted_in for a number that opted out,
-- nothing is created: 409 opted_out, as PATCH answers (see contacts.store).

local errors = require "errors"
local json = require "json"
local paging = require "paging"
local uuid = require "uuid"
local v = require "validate"
local session = require "auth.session"
local store = require "contacts.store"
local lists = require "contacts.lists"
local keywords = require "messaging.consent"

local type, pcall, pairs, error = type, pcall, pairs, error
local upper, find = string.upper, string.find

local NULL <const> = json.null
local PADDING_MAX <const> = 1024
local KEYWORD_MESSAGE <const> = "must be 2 to 20 letters or digits"
local Q <const> = v.text { min = 0, max = 100 }
local CONSENT_FILTER <const> = v.one_of { values = { "opted_in", "opted_out", "unknown" } }

-- A list keyword: 2 to 20 letters or digits (white space around them
-- ignored), stored upper-case.
local keyword = {
    optional = true,
    rule = function(value)
        if type(value) ~= "string" or #value > 20 + PADDING_MAX then return nil, KEYWORD_MESSAGE end
        value = v.trim(value)
        if #value < 2 or #value > 20 or not find(value, "^[A-Za-z0-9]+$") then return nil, KEYWORD_MESSAGE end
        value = upper(value)
        if keywords.reserved(value) then return nil, "is a reserved word" end
        return value
    end,
}

local NAME <const> = v.text { min = 0, max = 100, optional = true }
local LIST_IDS <const> = v.array { of = v.id(), max = 100, optional = true,
    message = "must be an array of at most 100 list ids", item_message = "must hold list ids" }
local CONSENT <const> = v.one_of { values = { "opted_in" }, optional = true }

local NEW_CONTACT = v.object {
    phoneNumber = v.phone(), firstName = NAME, lastName = NAME, lists = LIST_IDS, consent = CONSENT,
}
local CONTACT_CHANGES = v.object { firstName = NAME, lastName = NAME, lists = LIST_IDS, consent = CONSENT }
local NEW_LIST = v.object { name = v.text { min = 1, max = 100 }, keyword = keyword }
local LIST_CHANGES = v.object { name = v.text { min = 1, max = 100, optional = true }, keyword = keyword }

-- The path parameter name as an id of this church's rows, or raises not_found.
local function path_id(req, name)
    local id = req.params[name]
    if not uuid.valid(id) then errors.raise("not_found") end
    return id
end

local function found(value)
    if value == nil then errors.raise("not_found") end
    return value
end

-- The filters of GET /api/contacts, and the fields map of the bad ones or nil.
local function contact_filter(s, args)
    local filter, fields = {}, nil
    if args.list ~= nil then
        if not uuid.valid(args.list) or lists.get(s.db, args.list) == nil then
            fields = { list = "must be the id of one of this church's lists" }
        end
        filter.list = args.list
    end
    if args.consent ~= nil then
        local consent, err = CONSENT_FILTER.rule(args.consent)
        if consent == nil then
            fields = fields or {}
            fields.consent = err
        end
        filter.consent = consent
    end
    if args.q ~= nil then
        local q, err = Q.rule(args.q)
        if q == nil then
            fields = fields or {}
            fields.q = err
        elseif q ~= "" then
            filter.q = q
        end
    end
    return filter, fields
end

-- limit, cursor and the filters of GET /api/contacts; raises
-- validation_failed naming every bad one.
local function contact_query(s, req)
    local filter, fields = contact_filter(s, req:args())
    local ok, limit, cursor = pcall(paging.args, req)
    if not ok then
        if not errors.is(limit) then error(limit, 0) end
        fields = fields or {}
        for name, message in pairs(limit.opts.fields) do fields[name] = message end
    end
    if fields then errors.raise("validation_failed", { fields = fields }) end
    return limit, cursor, filter
end

-- A body's names: JSON null clears one, as "" does.
local function contact_changes(body)
    local input = CONTACT_CHANGES(body)
    if body.firstName == NULL then input.firstName = "" end
    if body.lastName == NULL then input.lastName = "" end
    return input
end

local function list_changes(body)
    local input = LIST_CHANGES(body)
    if body.keyword == NULL then input.keyword = false end
    return input
end

local function ok(s, status, body)
    return { status = status, tenant = s.tenant_id, json = body }
end

return {
    ["/api/contacts"] = {
        GET = function(req)
            local s = session.require(req)
            local limit, cursor, filter = contact_query(s, req)
            local list, next_cursor = store.page(s.db, limit, cursor, filter)
            return ok(s, 200, { contacts = list, nextCursor = paging.next_json(next_cursor) })
        end,
        POST = function(req)
            local s = session.require(req)
            return ok(s, 201, { contact = store.create(s.db, NEW_CONTACT(req:json())) })
        end,
    },
    ["/api/contacts/{id}"] = {
        GET = function(req)
            local s = session.require(req)
            return ok(s, 200, { contact = found(store.get(s.db, path_id(req, "id"))) })
        end,
        PATCH = function(req)
            local s = session.require(req)
            local id = path_id(req, "id")
            local input = contact_changes(req:json())
            return ok(s, 200, { contact = found(store.update(s.db, id, input)) })
        end,
        DELETE = function(req)
            local s = session.require(req)
            found(store.delete(s.db, path_id(req, "id")))
            return { status = 204, tenant = s.tenant_id }
        end,
    },
    ["/api/contacts/{id}/consent"] = {
        GET = function(req)
            local s = session.require(req)
            return ok(s, 200, { events = found(store.consent_events(s.db, path_id(req, "id"))) })
        end,
    },
    ["/api/lists"] = {
        GET = function(req)
            local s = session.require(req)
            return ok(s, 200, { lists = lists.all(s.db) })
        end,
        POST = function(req)
            local s = session.require(req)
            return ok(s, 201, { list = lists.create(s.db, NEW_LIST(req:json())) })
        end,
    },
    ["/api/lists/{id}"] = {
        GET = function(req)
            local s = session.require(req)
            return ok(s, 200, { list = found(lists.get(s.db, path_id(req, "id"))) })
        end,
        PATCH = function(req)
            local s = session.require(req)
            local id = path_id(req, "id")
            local input = list_changes(req:json())
            return ok(s, 200, { list = found(lists.update(s.db, id, input)) })
        end,
        DELETE = function(req)
            local s = session.require(req)
            found(lists.delete(s.db, path_id(req, "id")))
            return { status = 204, tenant = s.tenant_id }
        end,
    },
    ["/api/lists/{id}/contacts/{contactId}"] = {
        PUT = function(req)
            local s = session.require(req)
            found(lists.add(s.db, path_id(req, "id"), path_id(req, "contactId")))
            return { status = 204, tenant = s.tenant_id }
        end,
        media_type = false,
        DELETE = function(req)
            local s = session.require(req)
            found(lists.remove(s.db, path_id(req, "id"), path_id(req, "contactId")))
            return { status = 204, tenant = s.tenant_id }
        end,
    },
}
