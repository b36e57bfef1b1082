-- POST /api/contacts/import: a CSV file of contacts, all rows or none.
--
-- The file is read in C (steeple.csv: quotes, line breaks, BOM, encoding and
-- name lengths, numbers to E.164, per-row rejections), COPYed into a
-- temporary table, and one statement merges the rows into contacts (created,
-- names updated, deleted ones brought back), records consent and adds list
-- memberships, all in one transaction.

local errors = require "errors"
local db = require "db"
local json = require "json"
local csv = require "steeple.csv"
local config = require "steeple.config"
local log = require "steeple.log"
local session = require "auth.session"

local ipairs, pcall, error = ipairs, pcall, error
local find = string.find

local MAX_BYTES <const> = config.contacts.import_max_bytes
local MAX_ROWS <const> = config.contacts.import_max_rows
local UUID <const> = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- phone, first_name, last_name with their limits in characters; the numbers
-- reach the table in E.164 (core/phone.h has the rules)
local COLUMNS <const> = { { "phone", 64, "e164" }, { "first_name", 100 }, { "last_name", 100 } }

-- The C parser's reasons, as the API words them.
local REASONS <const> = {
    too_long = { phone = "invalid_phone", first_name = "name_too_long", last_name = "name_too_long" },
    refused = { phone = "invalid_phone" },
    invalid_encoding = "invalid_encoding",
    unterminated_quote = "unterminated_quote",
}

local STAGE_SQL <const> = [[
CREATE TEMP TABLE import_rows (line integer, phone text NOT NULL, first_name text, last_name text) ON COMMIT DROP]]

-- Room to sort 50,000 staged rows by number in memory (the default 4 MB
-- spills them to disk), for this transaction only.
local SORT_MEMORY_SQL <const> = "SET LOCAL work_mem = '32MB'"

local COPY_SQL <const> = "COPY import_rows (line, phone, first_name, last_name) FROM STDIN"

-- The merge is one statement, in three parts: HEAD stages the file's
-- numbers (the first row of each) and finds the contacts that have them;
-- then the contacts are written, by one of the two middles below; TAIL
-- records consent and memberships and counts. $1: consent=opted_in given;
-- $2: the list id or NULL. The numbers are staged in E.164 already.
local HEAD <const> = [[
WITH uniq AS (
    SELECT DISTINCT ON (phone) phone, first_name, last_name
    FROM import_rows ORDER BY phone, line
), old AS (
    SELECT c.id, c.phone_number, c.first_name, c.last_name, c.consent, c.deleted_at
    FROM contacts c JOIN uniq u ON u.phone = c.phone_number
)]]

-- A new contact's consent, source and time: opted out when the number is
-- suppressed, opted in when the import says so, else unknown. u is the
-- staged row, s its suppression.
local NEW_CONSENT <const> = [[
    CASE WHEN s.source IS NOT NULL THEN 'opted_out' WHEN $1::boolean THEN 'opted_in' ELSE 'unknown' END]]
local NEW_CONSENT_ROW <const> = NEW_CONSENT .. [[,
    CASE WHEN s.source IS NOT NULL THEN s.source WHEN $1::boolean THEN 'import' END,
    CASE WHEN s.source IS NOT NULL OR $1::boolean THEN now() END]]

-- How a known contact takes a staged row x (its names and new consent):
-- names are filled in, never blanked (a deleted contact takes the row's
-- own), consent moves only from unknown to opted_in, a deleted one comes
-- back; a contact the row would not change is left alone.
local KNOWN_SET <const> = [[
        first_name = CASE WHEN c.deleted_at IS NULL THEN coalesce(x.first_name, c.first_name) ELSE x.first_name END,
        last_name = CASE WHEN c.deleted_at IS NULL THEN coalesce(x.last_name, c.last_name) ELSE x.last_name END,
        consent = CASE WHEN c.consent = 'unknown' AND x.consent = 'opted_in' THEN 'opted_in' ELSE c.consent END,
        consent_source = CASE WHEN c.consent = 'unknown' AND x.consent = 'opted_in' THEN 'import'
                              ELSE c.consent_source END,
        consent_at = CASE WHEN c.consent = 'unknown' AND x.consent = 'opted_in' THEN now() ELSE c.consent_at END,
        created_at = CASE WHEN c.deleted_at IS NULL THEN c.created_at ELSE now() END,
        deleted_at = NULL,
        updated_at = now()]]
local KNOWN_CHANGES <const> = [[
       c.deleted_at IS NOT NULL
       OR (x.first_name IS NOT NULL AND x.first_name IS DISTINCT FROM c.first_name)
       OR (x.last_name IS NOT NULL AND x.last_name IS DISTINCT FROM c.last_name)
       OR (c.consent = 'unknown' AND x.consent = 'opted_in')]]
local RETURNED <const> = "c.id, c.phone_number, c.first_name, c.last_name, c.consent, c.consent_source"

-- The usual middle: the numbers no contact has are inserted, the known
-- contacts updated. A number that another transaction gives a contact
-- meanwhile makes the insert fail (contacts_phone_number_key); the
-- transaction then merges again with UPSERTED.
local INSERTED_OR_UPDATED <const> = [[
, fresh AS (
    INSERT INTO contacts AS c (phone_number, first_name, last_name, consent, consent_source, consent_at)
    SELECT u.phone, u.first_name, u.last_name, ]] .. NEW_CONSENT_ROW .. [[

    FROM uniq u LEFT JOIN suppressions s ON s.phone_number = u.phone
    WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.phone_number = u.phone)
    RETURNING ]] .. RETURNED .. [[

), changed AS (
    UPDATE contacts c SET
]] .. KNOWN_SET .. [[

    FROM (SELECT o.id, u.first_name, u.last_name, ]] .. NEW_CONSENT .. [[
                 AS consent
          FROM old o JOIN uniq u ON u.phone = o.phone_number
          LEFT JOIN suppressions s ON s.phone_number = u.phone) x
    WHERE c.id = x.id AND (]] .. KNOWN_CHANGES .. [[)
    RETURNING ]] .. RETURNED .. [[

), merged AS (
    SELECT * FROM fresh UNION ALL SELECT * FROM changed
)]]

-- The middle that no concurrent insert can fail: every number upserted
-- (about a tenth slower than the insert and update).
local UPSERTED <const> = [[
, merged AS (
    INSERT INTO contacts AS c (phone_number, first_name, last_name, consent, consent_source, consent_at)
    SELECT u.phone, u.first_name, u.last_name, ]] .. NEW_CONSENT_ROW .. [[

    FROM uniq u LEFT JOIN suppressions s ON s.phone_number = u.phone
    ON CONFLICT (phone_number) DO UPDATE SET
]] .. (KNOWN_SET:gsub("x%.", "EXCLUDED.")) .. [[

    WHERE ]] .. (KNOWN_CHANGES:gsub("x%.", "EXCLUDED.")) .. [[

    RETURNING ]] .. RETURNED .. [[

)]]

-- Memberships go in in contact id order: two statements adding the same
-- contacts to a list wait for each other in the same order (never a
-- deadlock), and the index entries and the membership check's lookups
-- (sql/tenant/0014) follow the contacts' key.
local TAIL <const> = [[
, events AS (
    INSERT INTO consent_events (phone_number, contact_id, from_state, to_state, source)
    SELECT m.phone_number, m.id, coalesce(o.consent, 'unknown'), m.consent, m.consent_source
    FROM merged m LEFT JOIN old o ON o.id = m.id
    WHERE m.consent <> coalesce(o.consent, 'unknown')
    RETURNING 1
), members_new AS (
    INSERT INTO list_members (list_id, contact_id)
    SELECT $2::uuid, m.id FROM merged m LEFT JOIN old o ON o.id = m.id
    WHERE $2::uuid IS NOT NULL AND o.id IS NULL
    ORDER BY m.id
    RETURNING 1
), members_old AS (
    INSERT INTO list_members (list_id, contact_id)
    SELECT $2::uuid, id FROM old
    WHERE $2::uuid IS NOT NULL
    ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM merged m LEFT JOIN old o ON o.id = m.id
        WHERE o.id IS NULL OR o.deleted_at IS NOT NULL) AS created,
       (SELECT count(*) FROM merged m JOIN old o ON o.id = m.id
        WHERE o.deleted_at IS NULL AND (m.first_name IS DISTINCT FROM o.first_name
                                        OR m.last_name IS DISTINCT FROM o.last_name)) AS updated,
       (SELECT count(*) FROM uniq) AS accepted,
       (SELECT count(*) FROM events) AS consent_changes,
       (SELECT count(*) FROM members_new) + (SELECT count(*) FROM members_old) AS memberships]]

local MERGE_SQL <const> = HEAD .. INSERTED_OR_UPDATED .. TAIL
local MERGE_RACED_SQL <const> = HEAD .. UPSERTED .. TAIL

local function invalid(field, message)
    errors.raise("validation_failed", { fields = { [field] = message } })
end

-- The query parameters: whether to opt in, and the list id or nil.
local function options(req)
    local args = req:args()
    if args.consent ~= nil and args.consent ~= "opted_in" then
        invalid("consent", "must be opted_in when given")
    end
    local list = args.list
    if list ~= nil and not find(list, UUID) then invalid("list", "must be the id of a list") end
    return args.consent == "opted_in", list
end

-- Reads the file; returns the parser's result or raises validation_failed.
local function parse(body)
    local out, err = csv.to_copy(body, COLUMNS, MAX_ROWS)
    if err == "too_many_rows" then
        invalid("file", "must have at most " .. MAX_ROWS .. " rows")
    elseif err then
        invalid("file", "must be a CSV text file with a header row")
    elseif not out.found.phone then
        invalid("phone", "the header row must have a phone column")
    end
    return out
end

-- The rows the parser refused, in the order of the file.
local function rejections(out)
    local list = {}
    for _, r in ipairs(out.rejected) do
        local reason = REASONS[r.reason]
        if r.column then reason = reason[r.column] end
        list[#list + 1] = { row = r.row, reason = reason }
    end
    if #list == 0 then return json.empty_array end
    return list
end

-- Merges the staged rows; returns the counts. A number given a contact by
-- another transaction while the insert ran is merged by the upsert instead.
local function merge_rows(tx, opt_in, list)
    tx:query("SAVEPOINT merge")
    local ok, rows = pcall(tx.query, tx, MERGE_SQL, opt_in, list)
    if ok then return rows[1] end
    if not db.is_unique_violation(rows, "contacts_phone_number_key") then error(rows, 0) end
    log.info("contacts import: a number got a contact meanwhile; merged again with upserts")
    tx:query("ROLLBACK TO SAVEPOINT merge")
    return tx:query(MERGE_RACED_SQL, opt_in, list)[1]
end

-- Stages and merges the rows in one transaction; returns the merge's counts.
local function merge(handle, out, opt_in, list)
    return db.transaction(handle, function(tx)
        if list and #tx:query("SELECT 1 FROM lists WHERE id = $1 FOR KEY SHARE", list) == 0 then
            invalid("list", "must be the id of a list")
        end
        if out.accepted == 0 then
            return { created = 0, updated = 0, accepted = 0 }
        end
        tx:query(SORT_MEMORY_SQL)
        tx:query(STAGE_SQL)
        tx:copy(COPY_SQL, out.text)
        return merge_rows(tx, opt_in, list or db.null)
    end)
end

local function import(req)
    local s = session.require(req)
    local opt_in, list = options(req)
    local out = parse(req.body)
    local counts = merge(s.db, out, opt_in, list)
    return {
        status = 200, tenant = s.tenant_id,
        json = {
            created = counts.created, updated = counts.updated,
            unchanged = counts.accepted - counts.created - counts.updated,
            rejected = rejections(out),
        },
    }
end

return {
    ["/api/contacts/import"] = {
        body_bytes = MAX_BYTES,
        media_type = "text/csv",
        POST = import,
    },
}
