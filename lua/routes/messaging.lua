-- Conversations (Bearer) and the Telnyx webhooks.

local errors = require "errors"
local db = require "db"
local session = require "auth.session"
local conversations = require "messaging.conversations"
local contacts = require "contacts.store"
local outbound = require "messaging.outbound"
local paging = require "paging"
local v = require "validate"
local webhook = require "messaging.webhook"

local ipairs = ipairs

local MAX_MEDIA <const> = 10

local MESSAGE = v.object {
    text = v.text { min = 0, max = 1600, keep_space = true, controls = true, default = "",
        message = "must be at most 1600 characters" },
    mediaUrls = v.array { of = v.url { max = 2048 }, max = MAX_MEDIA, optional = true,
        message = "must be an array of at most 10 URLs", item_message = "must hold http(s) URLs" },
}

local function invalid(field, message)
    errors.raise("validation_failed", { fields = { [field] = message } })
end

-- { text, media = { { url } } } of a new message, or raises validation_failed
-- naming every bad field.
local function outbound_input(body)
    local input = MESSAGE(body)
    local media = {}
    for i, u in ipairs(input.mediaUrls or {}) do media[i] = { url = u } end
    if input.text == "" and #media == 0 then invalid("text", "is required without mediaUrls") end
    return { text = input.text, media = conversations.array(media) }
end

-- The church's messaging number and database, or raises validation_failed.
local function church_of(s)
    local entry = s.tenant
    if entry.phone == db.null then invalid("from", "the church has no messaging number") end
    return { phone = entry.phone, server = entry.server, dbname = entry.dbname }
end

local webhook_routes = { POST = webhook.handle }

return {
    ["/api/conversations"] = {
        GET = function(req)
            local s = session.require(req)
            local limit, cursor = paging.args(req)
            local list, next_cursor = conversations.page(s.db, limit, cursor)
            return { status = 200, tenant = s.tenant_id,
                json = { conversations = list, nextCursor = paging.next_json(next_cursor) } }
        end,
    },
    ["/api/conversations/{id}/messages"] = {
        GET = function(req)
            local s = session.require(req)
            local limit, cursor = paging.args(req)
            local list, next_cursor = conversations.messages(s.db, req.params.id, limit, cursor)
            if list == nil then errors.raise("not_found") end
            return { status = 200, tenant = s.tenant_id,
                json = { messages = list, nextCursor = paging.next_json(next_cursor) } }
        end,
        POST = function(req)
            local s = session.require(req)
            local conversation = conversations.get(s.db, req.params.id)
            if conversation == nil then errors.raise("not_found") end
            local input = outbound_input(req:json())
            -- an opted-out contact gets nothing (the consent rules): nothing stored or sent
            if contacts.opted_out(s.db, conversation.contact_phone) then errors.raise("opted_out") end
            local row = outbound.queue(s, conversation, input, church_of(s))
            return { status = 202, tenant = s.tenant_id, json = { message = conversations.message_json(row) } }
        end,
    },
    ["/api/webhooks/telnyx/mms"] = webhook_routes,
    ["/api/webhooks/telnyx/messaging"] = webhook_routes,
}
