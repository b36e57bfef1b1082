-- Conversations (Bearer) and the Telnyx webhooks.

local errors = require "errors"
local json = require "json"
local db = require "db"
local session = require "auth.session"
local conversations = require "messaging.conversations"
local outbound = require "messaging.outbound"
local paging = require "paging"
local webhook = require "messaging.webhook"

local type, ipairs = type, ipairs
local find = string.find
local utf8_len = utf8.len

local MAX_TEXT <const> = 1600
local MAX_MEDIA <const> = 10

local function invalid(field, message)
    errors.raise("validation_failed", { fields = { [field] = message } })
end

-- { text, media = { { url } } } of a new message, or raises validation_failed.
local function outbound_input(body)
    local text, urls = body.text, body.mediaUrls
    if text == nil or text == json.null then text = "" end
    if type(text) ~= "string" then invalid("text", "must be a string") end
    -- 4 bytes a character at most: a longer text is refused unread
    if #text > 4 * MAX_TEXT then invalid("text", "must be at most 1600 characters") end
    local n = utf8_len(text)
    if n == nil then invalid("text", "must be a string") end
    if n > MAX_TEXT then invalid("text", "must be at most 1600 characters") end
    if urls == nil or urls == json.null then urls = {} end
    if type(urls) ~= "table" or #urls > MAX_MEDIA then invalid("mediaUrls", "must be an array of at most 10 URLs") end
    local media = {}
    for i, u in ipairs(urls) do
        if type(u) ~= "string" or #u > 2048 or not find(u, "^https?://[^%s]+$") then
            invalid("mediaUrls", "must hold http(s) URLs")
        end
        media[i] = { url = u }
    end
    if text == "" and #media == 0 then invalid("text", "is required without mediaUrls") end
    return { text = text, media = conversations.array(media) }
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
            local row = outbound.queue(s, conversation, input, church_of(s))
            return { status = 202, tenant = s.tenant_id, json = { message = conversations.message_json(row) } }
        end,
    },
    ["/api/webhooks/telnyx/mms"] = webhook_routes,
    ["/api/webhooks/telnyx/messaging"] = webhook_routes,
}
