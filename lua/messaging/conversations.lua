-- Conversations and their messages in a church's database, read in keyset
-- pages (paging.lua): the next cursor is nil on the last page.
--
--   conversations.page(handle, limit, cursor)   -> list, next_cursor|nil
--   conversations.messages(handle, id, limit, cursor) -> list, next_cursor|nil;
--       nil when there is no such conversation. The first page (no cursor)
--       marks the conversation read.
--   conversations.get(handle, id)               -> { id, contact_phone } or nil
--   conversations.message_json(row)             -> the API's message object
--   conversations.message_columns(prefix)       -> the SELECT list message_json reads
--   conversations.array(list)                   -> list, or json.empty_array when empty
--
-- Times are ISO 8601 in UTC with microseconds.

local db = require "db"
local json = require "json"
local paging = require "paging"
local uuid = require "uuid"

local type, ipairs = type, ipairs

local M = {}

-- A list as a JSON array, empty included.
local function array(list)
    return #list > 0 and list or json.empty_array
end
M.array = array

local ISO <const> = [[to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')]]
local function iso(column) return ISO:format(column) end

function M.page(handle, limit, cursor)
    local time, id = nil, nil
    if cursor then time, id = paging.decode_cursor(cursor) end
    local rows, next_cursor = paging.query(handle, limit, "last_message_at", [[
        SELECT c.id, k.phone_number AS contact_phone, ]] .. iso("c.last_message_at") .. [[ AS last_message_at,
               c.last_message_preview, c.unread_count
        FROM conversations c JOIN contacts k ON k.id = c.contact_id
        WHERE $1::timestamptz IS NULL OR (c.last_message_at, c.id) < ($1::timestamptz, $2::uuid)
        ORDER BY c.last_message_at DESC, c.id DESC
        LIMIT $3]], time or db.null, id or db.null)
    local list = {}
    for i, r in ipairs(rows) do
        list[i] = { id = r.id, contactPhone = r.contact_phone, lastMessageAt = r.last_message_at,
            lastMessagePreview = r.last_message_preview, unreadCount = r.unread_count }
    end
    return array(list), next_cursor
end

function M.get(handle, id)
    if not uuid.valid(id) then return nil end
    return handle:query([[
        SELECT c.id, k.phone_number AS contact_phone FROM conversations c
        JOIN contacts k ON k.id = c.contact_id WHERE c.id = $1]], id)[1]
end

-- The columns message_json() reads, of the table or alias prefix ("" or "m.").
function M.message_columns(prefix)
    local p = prefix or ""
    return p .. "id AS id, " .. p .. "direction AS direction, " .. p .. "from_number AS from_number, "
        .. p .. "to_number AS to_number, " .. p .. "text AS text, " .. p .. "media AS media, "
        .. p .. "status AS status, " .. p .. "provider_message_id AS provider_message_id, "
        .. iso(p .. "created_at") .. " AS created_at"
end
local MESSAGE_COLUMNS <const> = M.message_columns("m.")

function M.message_json(r)
    local media = {}
    for i, m in ipairs(type(r.media) == "table" and r.media or {}) do
        media[i] = { url = m.url, contentType = m.contentType }
    end
    return {
        id = r.id, direction = r.direction, from = r.from_number, to = r.to_number, text = r.text,
        media = array(media), status = r.status, providerMessageId = r.provider_message_id,
        createdAt = r.created_at,
    }
end

function M.messages(handle, id, limit, cursor)
    if M.get(handle, id) == nil then return nil end
    local time, mid = nil, nil
    if cursor then time, mid = paging.decode_cursor(cursor) end
    -- the sort key qualified: a bare created_at would name the text column
    -- of the SELECT list, which no index orders
    local rows, next_cursor = paging.query(handle, limit, "created_at", "SELECT " .. MESSAGE_COLUMNS .. [[
        FROM messages m
        WHERE m.conversation_id = $1
          AND ($2::timestamptz IS NULL OR (m.created_at, m.id) < ($2::timestamptz, $3::uuid))
        ORDER BY m.created_at DESC, m.id DESC
        LIMIT $4]], id, time or db.null, mid or db.null)
    if cursor == nil then
        handle:query("UPDATE conversations SET unread_count = 0 WHERE id = $1 AND unread_count <> 0", id)
    end
    local list = {}
    for i, r in ipairs(rows) do list[i] = M.message_json(r) end
    return array(list), next_cursor
end

return M
