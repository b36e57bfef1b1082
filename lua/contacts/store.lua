-- Contacts in a church's database: one per phone number, never removed
-- (their conversation and messages refer to them), only marked deleted.
--
--   store.page(handle, limit, cursor, filter) -> list, next_cursor|nil
--       filter = { list?, consent?, q? }; oldest first (created_at, id)
--   store.get(handle, id)             -> the API's contact object, or nil
--   store.create(handle, input)       -> contact object; raises contact_exists,
--                                        opted_out, validation_failed (lists)
--   store.update(handle, id, input)   -> contact object or nil (no such contact);
--                                        raises opted_out, validation_failed
--   store.delete(handle, id)          -> true, or nil when there is no such contact
--   store.consent_events(handle, id)  -> list of events, or nil
--   store.opted_out(handle, phone)    -> true when the number may get nothing
--   store.lists_exist(tx, ids)        raises validation_failed (field lists)
--                                     unless every id is a list of the church
--
-- input: { phoneNumber, firstName?, lastName?, lists?, consent? } with names
-- nil (keep; on create: none) or "" (none). Every consent change made here
-- writes a consent_events row in the same transaction (source admin).
-- A consent of opted_in is refused (409 opted_out) while the contact is
-- opted out or its number is suppressed: an admin never overrides an opt-out.

local db = require "db"
local errors = require "errors"
local json = require "json"
local paging = require "paging"

local ipairs, type = ipairs, type
local gsub, match, sub = string.gsub, string.match, string.sub
local concat, unpack = table.concat, table.unpack

local M = {}

local codec = json.new(4)

local ISO <const> = [[to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')]]
local function iso(column) return ISO:format(column) end

local EVENT_COLUMNS <const> = "from_state, to_state, source, message_id, " .. iso("at") .. " AS at"
local COLUMNS <const> = "c.id, c.phone_number, c.first_name, c.last_name, c.consent, c.consent_source, "
    .. iso("c.consent_at") .. " AS consent_at, " .. iso("c.created_at") .. " AS created_at, "
    .. iso("c.updated_at") .. " AS updated_at, "
    .. "coalesce((SELECT jsonb_agg(m.list_id ORDER BY m.created_at, m.list_id) FROM list_members m "
    .. "WHERE m.contact_id = c.id), '[]') AS lists"

local function array(list)
    return #list > 0 and list or json.empty_array
end

local function json_of(r)
    return {
        id = r.id, phoneNumber = r.phone_number, firstName = r.first_name, lastName = r.last_name,
        consent = r.consent, consentSource = r.consent_source, consentAt = r.consent_at,
        lists = array(type(r.lists) == "table" and r.lists or {}),
        createdAt = r.created_at, updatedAt = r.updated_at,
    }
end

-- "$n", the text of the n-th parameter.
local function placeholder(n)
    return "$" .. n
end

-- A function that appends a value to params and returns its placeholder.
local function binder(params)
    return function(value)
        params[#params + 1] = value
        return placeholder(#params)
    end
end

-- The conditions joined by AND. Each is SQL text of constants and
-- placeholders: values travel as parameters.
local function where_sql(conditions)
    return concat(conditions, " AND ")
end

-- Text for LIKE with its metacharacters (\, %, _) escaped.
local function like_escape(s)
    return (gsub(s, "[\\%%_]", "\\%0"))
end

-- The WHERE conditions of a q search, each a prefix match an index serves
-- (contacts_phone_prefix, contacts_*_name_prefix); adds its parameters.
local function search_terms(q, param)
    local terms = {}
    local digits = match(q, "^%+?(%d+)$")
    if digits then
        terms[#terms + 1] = "c.phone_number LIKE " .. param("+" .. digits .. "%")
        if sub(digits, 1, 1) ~= "1" then
            terms[#terms + 1] = "c.phone_number LIKE " .. param("+1" .. digits .. "%")
        end
    end
    local text = like_escape(q)
    local p = param(text)
    terms[#terms + 1] = "lower(c.first_name) LIKE lower(" .. p .. ") || '%'"
    terms[#terms + 1] = "lower(c.last_name) LIKE lower(" .. p .. ") || '%'"
    local first, last = match(q, "^(%S+)%s+(.+)$")
    if first then
        terms[#terms + 1] = "(lower(c.first_name) LIKE lower(" .. param(like_escape(first)) .. ") AND "
            .. "lower(c.last_name) LIKE lower(" .. param(like_escape(last)) .. ") || '%')"
    end
    return "(" .. concat(terms, " OR ") .. ")"
end

function M.page(handle, limit, cursor, filter)
    local params, where = {}, { "c.deleted_at IS NULL" }
    local param = binder(params)
    if cursor then
        local time, id = paging.decode_cursor(cursor)
        where[#where + 1] = "(c.created_at, c.id) > (" .. param(time) .. "::timestamptz, " .. param(id) .. "::uuid)"
    end
    if filter.list then
        where[#where + 1] = "EXISTS (SELECT 1 FROM list_members m WHERE m.list_id = " .. param(filter.list)
            .. " AND m.contact_id = c.id)"
    end
    if filter.consent then where[#where + 1] = "c.consent = " .. param(filter.consent) end
    if filter.q then where[#where + 1] = search_terms(filter.q, param) end
    local sql = "SELECT " .. COLUMNS .. " FROM contacts c WHERE " .. where_sql(where)
        .. " ORDER BY c.created_at, c.id LIMIT " .. placeholder(#params + 1)
    local rows, next_cursor = paging.query(handle, limit, "created_at", sql, unpack(params))
    local list = {}
    for i, r in ipairs(rows) do list[i] = json_of(r) end
    return array(list), next_cursor
end

local function row(conn, id)
    return conn:query("SELECT " .. COLUMNS .. " FROM contacts c WHERE c.id = $1 AND c.deleted_at IS NULL", id)[1]
end

function M.get(handle, id)
    local r = row(handle, id)
    return r and json_of(r)
end

function M.lists_exist(tx, ids)
    if #ids == 0 then return end
    local found = tx:query([[
        SELECT count(*) AS n FROM (
            SELECT id FROM lists WHERE id = ANY (SELECT (jsonb_array_elements_text($1::jsonb))::uuid)
            FOR KEY SHARE) l]], codec.encode(ids))[1].n
    if found ~= #ids then
        errors.raise("validation_failed", { fields = { lists = "must hold ids of this church's lists" } })
    end
end

-- Replaces the contact's memberships by ids (already checked).
local function set_lists(tx, id, ids)
    local encoded = codec.encode(array(ids))
    tx:query([[
        DELETE FROM list_members WHERE contact_id = $1
          AND list_id <> ALL (SELECT (jsonb_array_elements_text($2::jsonb))::uuid)]], id, encoded)
    tx:query([[
        INSERT INTO list_members (list_id, contact_id)
        SELECT (jsonb_array_elements_text($2::jsonb))::uuid, $1
        ON CONFLICT DO NOTHING]], id, encoded)
end

local function suppressed(conn, phone)
    return conn:query("SELECT source FROM suppressions WHERE phone_number = $1", phone)[1] ~= nil
end

function M.opted_out(handle, phone)
    return handle:query([[
        SELECT EXISTS (SELECT 1 FROM suppressions WHERE phone_number = $1)
            OR EXISTS (SELECT 1 FROM contacts WHERE phone_number = $1 AND consent = 'opted_out') AS out]],
        phone)[1].out
end

local function record_consent(tx, contact_id, phone, from, to)
    tx:query([[
        INSERT INTO consent_events (phone_number, contact_id, from_state, to_state, source)
        VALUES ($1, $2, $3, $4, 'admin')]], phone, contact_id, from, to)
end

-- "" and nil both store no name.
local function name(value)
    if value == nil or value == "" then return db.null end
    return value
end

-- The consent a contact takes when it is created, found again or deleted:
-- an opt-out that stands for its number, the admin's opt-in, or unknown.
local CONSENT_OF_NEW <const> = [[
    SELECT CASE WHEN s.source IS NOT NULL THEN 'opted_out' WHEN $2 THEN 'opted_in' ELSE 'unknown' END AS consent,
           CASE WHEN s.source IS NOT NULL THEN s.source WHEN $2 THEN 'admin' END AS source,
           CASE WHEN s.source IS NOT NULL THEN s.created_at WHEN $2 THEN now() END AS at
    FROM (SELECT 1) one LEFT JOIN suppressions s ON s.phone_number = $1]]

-- The consent of a contact whose consent was old_consent (nil for a new
-- one): { consent, source, at }. A contact's own opt-out stands too, its
-- source and time kept (source and at nil).
local function standing_consent(tx, phone, old_consent, opt_in)
    if old_consent == "opted_out" then return { consent = "opted_out" } end
    return tx:query(CONSENT_OF_NEW, phone, opt_in)[1]
end

-- Sets the consent of standing_consent(): source and time change only with the state.
local SET_CONSENT <const> = [[
    consent = $2, consent_source = CASE WHEN $2 = consent THEN consent_source ELSE $3 END,
    consent_at = CASE WHEN $2 = consent THEN consent_at ELSE $4 END]]

-- A POST with the number of a deleted contact brings that contact back
-- (new names, created now); its number's consent history stays. With
-- consent opted_in and a suppressed number nothing is created: 409
-- opted_out, as for PATCH (the admin learns the number opted out).
local function create_in(tx, input)
    local phone, opt_in = input.phoneNumber, input.consent == "opted_in"
    local old = tx:query("SELECT id, deleted_at IS NOT NULL AS deleted, consent FROM contacts "
        .. "WHERE phone_number = $1 FOR UPDATE", phone)[1]
    if old and not old.deleted then errors.raise("contact_exists") end
    if opt_in and (suppressed(tx, phone) or (old and old.consent == "opted_out")) then errors.raise("opted_out") end
    M.lists_exist(tx, input.lists or {})
    local c = standing_consent(tx, phone, old and old.consent, opt_in)
    local id
    if old then
        tx:query("UPDATE contacts SET " .. SET_CONSENT .. [[,
                first_name = $5, last_name = $6, deleted_at = NULL, created_at = now(), updated_at = now()
            WHERE id = $1]], old.id, c.consent, c.source or db.null, c.at or db.null, name(input.firstName),
            name(input.lastName))
        id = old.id
    else
        local new = tx:query([[
            INSERT INTO contacts (phone_number, first_name, last_name, consent, consent_source, consent_at)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (phone_number) DO NOTHING RETURNING id]],
            phone, name(input.firstName), name(input.lastName), c.consent, c.source, c.at)[1]
        -- an inbound message from the number made its contact meanwhile
        if new == nil then errors.raise("contact_exists") end
        id = new.id
    end
    -- the admin's opt-in is a change; an opt-out that stands was recorded when it happened
    if c.consent == "opted_in" then record_consent(tx, id, phone, old and old.consent or "unknown", c.consent) end
    set_lists(tx, id, input.lists or {})
    return json_of(row(tx, id))
end

function M.create(handle, input)
    return db.transaction(handle, function(tx) return create_in(tx, input) end)
end

local function update_in(tx, id, input)
    local old = tx:query("SELECT phone_number, consent FROM contacts WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        id)[1]
    if old == nil then return nil end
    if input.lists then M.lists_exist(tx, input.lists) end
    if input.consent == "opted_in" and old.consent ~= "opted_in" then
        if old.consent == "opted_out" or suppressed(tx, old.phone_number) then errors.raise("opted_out") end
        tx:query("UPDATE contacts SET consent = 'opted_in', consent_source = 'admin', consent_at = now() WHERE id = $1",
            id)
        record_consent(tx, id, old.phone_number, old.consent, "opted_in")
    end
    tx:query([[
        UPDATE contacts SET first_name = CASE WHEN $2 THEN $3 ELSE first_name END,
            last_name = CASE WHEN $4 THEN $5 ELSE last_name END, updated_at = now()
        WHERE id = $1]], id, input.firstName ~= nil, name(input.firstName), input.lastName ~= nil,
        name(input.lastName))
    if input.lists then set_lists(tx, id, input.lists) end
    return json_of(row(tx, id))
end

function M.update(handle, id, input)
    return db.transaction(handle, function(tx) return update_in(tx, id, input) end)
end

-- Marks the contact deleted: names and memberships cleared, consent unknown
-- unless it or its number opted out (then the opt-out stands).
local function delete_in(tx, id)
    local old = tx:query("SELECT phone_number, consent FROM contacts WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        id)[1]
    if old == nil then return nil end
    local c = standing_consent(tx, old.phone_number, old.consent, false)
    tx:query("UPDATE contacts SET " .. SET_CONSENT .. [[,
            deleted_at = now(), updated_at = now(), first_name = NULL, last_name = NULL
        WHERE id = $1]], id, c.consent, c.source or db.null, c.at or db.null)
    tx:query("DELETE FROM list_members WHERE contact_id = $1", id)
    if c.consent == "unknown" and old.consent ~= "unknown" then
        record_consent(tx, id, old.phone_number, old.consent, c.consent)
    end
    return true
end

function M.delete(handle, id)
    return db.transaction(handle, function(tx) return delete_in(tx, id) end)
end

-- The consent history of the contact's number, oldest first: it follows the
-- number across delete and re-create.
function M.consent_events(handle, id)
    local contact = handle:query("SELECT phone_number FROM contacts WHERE id = $1 AND deleted_at IS NULL", id)[1]
    if contact == nil then return nil end
    local rows = handle:query("SELECT " .. EVENT_COLUMNS .. " FROM consent_events WHERE phone_number = $1 ORDER BY id",
        contact.phone_number)
    local list = {}
    for i, r in ipairs(rows) do
        list[i] = { from = r.from_state, to = r.to_state, source = r.source, at = r.at, messageId = r.message_id }
    end
    return array(list)
end

return M
