-- Lists of contacts in a church's database. A list's member_count follows
-- its memberships (a trigger); deleting a list keeps its contacts.
--
--   lists.all(handle)                 -> every list, oldest first
--   lists.get(handle, id)             -> the API's list object, or nil
--   lists.create(handle, input)       -> list object; raises keyword_taken
--   lists.update(handle, id, input)   -> list object, or nil; raises keyword_taken
--   lists.delete(handle, id)          -> true, or nil when there is no such list
--   lists.add(handle, id, contact)    -> true, or nil when the list or the contact is missing
--   lists.remove(handle, id, contact) -> true, or nil when the list or the contact is missing
--
-- input: { name?, keyword? } with keyword a cleaned keyword (upper case),
-- false for none (PATCH: remove it) or nil (keep).

local db = require "db"
local errors = require "errors"
local json = require "json"

local ipairs, pcall, error = ipairs, pcall, error

local M = {}

local ISO <const> = [[to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')]]
local function iso(column) return ISO:format(column) end
local COLUMNS <const> = "id, name, keyword, member_count, " .. iso("created_at") .. " AS created_at"

local function json_of(r)
    return { id = r.id, name = r.name, keyword = r.keyword, memberCount = r.member_count, createdAt = r.created_at }
end

function M.all(handle)
    local list = {}
    local rows = handle:query("SELECT " .. COLUMNS .. " FROM lists ORDER BY lists.created_at, lists.id")
    for i, r in ipairs(rows) do
        list[i] = json_of(r)
    end
    return #list > 0 and list or json.empty_array
end

function M.get(handle, id)
    local r = handle:query("SELECT " .. COLUMNS .. " FROM lists WHERE id = $1", id)[1]
    return r and json_of(r)
end

-- Runs handle:query(...) and returns its rows; a second list with the
-- keyword raises keyword_taken.
local function write(handle, sql, ...)
    local ok, rows = pcall(handle.query, handle, sql, ...)
    if ok then return rows end
    if db.is_unique_violation(rows, "lists_keyword_key") then errors.raise("keyword_taken") end
    error(rows, 0)
end

function M.create(handle, input)
    return json_of(write(handle, "INSERT INTO lists (name, keyword) VALUES ($1, $2) RETURNING " .. COLUMNS,
        input.name, input.keyword or db.null)[1])
end

function M.update(handle, id, input)
    local r = write(handle, [[
        UPDATE lists SET name = coalesce($2, name), keyword = CASE WHEN $3 THEN $4 ELSE keyword END,
            updated_at = now()
        WHERE id = $1 RETURNING ]] .. COLUMNS,
        id, input.name or db.null, input.keyword ~= nil, input.keyword or db.null)[1]
    return r and json_of(r)
end

function M.delete(handle, id)
    return handle:query("DELETE FROM lists WHERE id = $1 RETURNING id", id)[1] ~= nil or nil
end

-- The list and the (not deleted) contact, each when it exists.
local PAIR <const> = [[
    SELECT (SELECT id FROM lists WHERE id = $1 FOR KEY SHARE) AS list,
           (SELECT id FROM contacts WHERE id = $2 AND deleted_at IS NULL FOR KEY SHARE) AS contact]]

function M.add(handle, id, contact)
    return db.transaction(handle, function(tx)
        local pair = tx:query(PAIR, id, contact)[1]
        if pair.list == db.null or pair.contact == db.null then return nil end
        tx:query("INSERT INTO list_members (list_id, contact_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", id, contact)
        return true
    end)
end

function M.remove(handle, id, contact)
    return db.transaction(handle, function(tx)
        local pair = tx:query(PAIR, id, contact)[1]
        if pair.list == db.null or pair.contact == db.null then return nil end
        tx:query("DELETE FROM list_members WHERE list_id = $1 AND contact_id = $2", id, contact)
        return true
    end)
end

return M
