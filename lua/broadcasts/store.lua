-- Broadcasts in a church's database, and the registry's mark of the
-- churches that have one to dispatch (broadcast_tenants).
--
--   store.create(session, input) -> the broadcast's JSON; input = { text,
--       template (merge.parse), media = { { url } }, lists, send_at (RFC
--       3339 or nil) }; raises validation_failed for lists that are not the
--       church's
--   store.get(handle, id) -> JSON or nil;  store.page(handle, limit, cursor)
--   store.move(session, id, action) -> JSON after "pause", "resume" or
--       "cancel"; raises not_found, invalid_state
--   store.mark(tx, tenant_id) marks the church due now, on the caller's
--       transaction of the church's database (see below)
--   store.unmark_if_idle(handle, tenant_id) -> true when the church has no
--       broadcast scheduled or sending and its mark was removed
--   store.json(row) -> the API's broadcast object of a row of COLUMNS
--
-- The mark follows outbound.lua's outbox rule: a transaction that makes a
-- broadcast due writes the mark first while it holds the church's broadcast
-- lock (shared); the mark is removed only under that lock held exclusively
-- (never waited for) once nothing is scheduled or sending.

local db = require "db"
local errors = require "errors"
local json = require "json"
local paging = require "paging"
local uuid = require "uuid"

local ipairs = ipairs

local M = {}

local BROADCAST_LOCK <const> = 0x5374506c42636173 -- "StPlBcas"
local codec = json.new(8)

-- The columns json() reads; times in ISO 8601, UTC, with microseconds.
local COLUMNS <const> = [[
    id, status, text, to_jsonb(list_ids) AS list_ids,
    to_char(send_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS send_at,
    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS started_at,
    to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS finished_at,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at,
    recipients, queued, sent, delivered, failed, opted_out, replies]]
M.COLUMNS = COLUMNS

local function or_null(v)
    if v == nil then return json.null end
    return v
end

function M.json(r)
    return {
        id = r.id, status = r.status, text = r.text, lists = r.list_ids,
        sendAt = r.send_at, startedAt = or_null(r.started_at ~= db.null and r.started_at or nil),
        finishedAt = or_null(r.finished_at ~= db.null and r.finished_at or nil), createdAt = r.created_at,
        counts = { recipients = r.recipients, queued = r.queued, sent = r.sent, delivered = r.delivered,
                   failed = r.failed, optedOut = r.opted_out, replies = r.replies },
    }
end

function M.mark(tx, tenant_id)
    tx:query("SELECT 1 AS locked FROM pg_advisory_xact_lock_shared($1)", BROADCAST_LOCK)
    db.registry():query([[
        INSERT INTO broadcast_tenants (tenant_id, due_at) VALUES ($1, now())
        ON CONFLICT (tenant_id) DO UPDATE SET due_at = least(broadcast_tenants.due_at, now()),
            progress_due_at = least(broadcast_tenants.progress_due_at, now())]], tenant_id)
end

function M.unmark_if_idle(handle, tenant_id)
    return db.transaction(handle, function(tx)
        if not tx:query("SELECT pg_try_advisory_xact_lock($1) AS locked", BROADCAST_LOCK)[1].locked then
            return false
        end
        local active = tx:query([[
            SELECT EXISTS (SELECT 1 FROM broadcasts WHERE status IN ('scheduled', 'sending')) AS active]])[1]
        if active.active then return false end
        db.registry():query("DELETE FROM broadcast_tenants WHERE tenant_id = $1", tenant_id)
        return true
    end)
end

-- Raises validation_failed unless every id is one of the church's lists.
local function check_lists(tx, ids)
    local found = tx:query([[
        SELECT count(*)::int AS n FROM lists
        WHERE id = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::uuid))]], codec.encode(ids))[1].n
    if found ~= #ids then
        errors.raise("validation_failed", { fields = { lists = "must hold ids of this church's lists" } })
    end
end

local INSERT <const> = [[
    INSERT INTO broadcasts (status, text, media, list_ids, send_at)
    VALUES (CASE WHEN $4::timestamptz > now() THEN 'scheduled' ELSE 'sending' END, $1, $2::jsonb,
            ARRAY(SELECT jsonb_array_elements_text($3::jsonb)::uuid), greatest(coalesce($4::timestamptz, now()), now()))
    RETURNING ]] .. COLUMNS

function M.create(s, input)
    local row = db.transaction(s.db, function(tx)
        check_lists(tx, input.lists)
        M.mark(tx, s.tenant_id)
        return tx:query(INSERT, input.text, codec.encode(input.media), codec.encode(input.lists),
            input.send_at or db.null)[1]
    end)
    return M.json(row)
end

local GET <const> = "SELECT " .. COLUMNS .. " FROM broadcasts WHERE id = $1"
-- the sort key qualified: a bare created_at would name the text column of
-- the SELECT list, which no index orders
local PAGE <const> = "SELECT " .. COLUMNS .. [[
    FROM broadcasts WHERE $1::timestamptz IS NULL OR (created_at, id) < ($1::timestamptz, $2::uuid)
    ORDER BY broadcasts.created_at DESC, broadcasts.id DESC LIMIT $3]]

function M.get(handle, id)
    if not uuid.valid(id) then return nil end
    local row = handle:query(GET, id)[1]
    return row and M.json(row)
end

function M.page(handle, limit, cursor)
    local time, id = nil, nil
    if cursor then time, id = paging.decode_cursor(cursor) end
    local rows, next_cursor = paging.query(handle, limit, "created_at", PAGE, time or db.null, id or db.null)
    local list = {}
    for i, r in ipairs(rows) do list[i] = M.json(r) end
    return #list > 0 and list or json.empty_array, next_cursor
end

-- Each move: the states it leaves from, and the statement that makes it.
local MOVES <const> = {
    pause = { from = { scheduled = true, sending = true }, sql = [[
        UPDATE broadcasts SET status = 'paused', updated_at = now() WHERE id = $1 RETURNING ]] .. COLUMNS },
    resume = { from = { paused = true }, mark = true, sql = [[
        UPDATE broadcasts SET updated_at = now(),
            status = CASE WHEN started_at IS NULL AND send_at > now() THEN 'scheduled' ELSE 'sending' END
        WHERE id = $1 RETURNING ]] .. COLUMNS },
    cancel = { from = { scheduled = true, sending = true, paused = true }, before = [[
        UPDATE broadcast_recipients SET state = 'cancelled' WHERE broadcast_id = $1 AND state = 'pending']],
        sql = [[
        UPDATE broadcasts SET status = 'cancelled', finished_at = now(), updated_at = now()
        WHERE id = $1 RETURNING ]] .. COLUMNS },
}

function M.move(s, id, action)
    if not uuid.valid(id) then errors.raise("not_found") end
    local move = MOVES[action]
    local row = db.transaction(s.db, function(tx)
        local cur = tx:query("SELECT status FROM broadcasts WHERE id = $1 FOR UPDATE", id)[1]
        if cur == nil then errors.raise("not_found") end
        if not move.from[cur.status] then
            errors.raise("invalid_state", { message = "A " .. cur.status .. " broadcast cannot " .. action .. "." })
        end
        if move.mark then M.mark(tx, s.tenant_id) end
        if move.before then tx:query(move.before, id) end
        return tx:query(move.sql, id)[1]
    end)
    return M.json(row)
end

return M
