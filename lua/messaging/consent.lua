-- Consent by text message: the keywords of an inbound text (STOP, START,
-- HELP and the lists' keywords) and the changes of a number's consent they,
-- or the carrier, ask for. Each change moves the contact, the number's
-- suppression and its history (consent_events) together, on the caller's
-- transaction: events.lua applies a keyword in the transaction that stores
-- its message, so that a retried event changes nothing.
--
--   consent.keyword(text) -> kind, word, or nil for any other text. kind is
--       "stop", "start" or "help" for the words of API.md's table, "list" for
--       a word that may be a list's keyword (word: its upper-case form). The
--       text counts trimmed, case-insensitive, with trailing punctuation
--       dropped and "OPT OUT" with any white space between its words; a
--       longer sentence is never a keyword.
--   consent.apply(tx, church, contact, kind, word, message_id)
--       -> the reply's text and whether it may reach an opted-out number
--       (the STOP confirmation and the HELP answer), or nil when there is
--       none: word is no list's keyword (nothing changed), or a STOP comes
--       from a contact already opted out. contact = { id, phone }; church =
--       { name, help_text }; message_id is the stored inbound message.
--   consent.reserved(word) -> true when an upper-case word is one of the
--       STOP, START or HELP words, which no list may take as its keyword.
--   consent.carrier_opt_out(handle, phone) marks the number opted out by the
--       carrier (Telnyx refused a send with 40300): one transaction.

local db = require "db"
local validate = require "validate"

local find, sub, upper = string.find, string.sub, string.upper
local ipairs = ipairs

local M = {}

-- A keyword with white space around it: anything longer is a sentence.
local MAX_TEXT <const> = 1024 + 64
-- A trimmed keyword ("UNSUBSCRIBE!!!", "opt   out?")
local MAX_WORD <const> = 64

local KINDS <const> = {
    STOP = "stop", STOPALL = "stop", UNSUBSCRIBE = "stop", CANCEL = "stop", END = "stop", QUIT = "stop",
    REVOKE = "stop", OPTOUT = "stop",
    START = "start", UNSTOP = "start", YES = "start",
    HELP = "help", INFO = "help",
}

function M.reserved(word)
    return KINDS[word] ~= nil
end

-- Punctuation phones put at the end of a word, beyond ASCII's: the ellipsis,
-- full-width and ideographic marks, closing quotes, inverted marks.
local TRAILING_UTF8 <const> = { "\u{2026}", "\u{3002}", "\u{FF01}", "\u{FF1F}", "\u{FF0E}", "\u{2019}",
    "\u{201D}", "\u{00A1}", "\u{00BF}" }

-- t without the punctuation and white space at its end (t is short).
local function drop_trailing(t)
    while #t > 0 do
        if find(t, "^[%p%s]", #t) then
            t = sub(t, 1, -2)
        else
            local cut = false
            for _, p in ipairs(TRAILING_UTF8) do
                if sub(t, -#p) == p then
                    t, cut = sub(t, 1, -#p - 1), true
                    break
                end
            end
            if not cut then return t end
        end
    end
    return t
end

function M.keyword(text)
    if #text == 0 or #text > MAX_TEXT then return nil end
    local t = validate.trim(text)
    if #t > MAX_WORD then return nil end
    t = upper(drop_trailing(t))
    local kind = KINDS[t]
    if kind then return kind, t end
    if find(t, "^OPT%s+OUT$") then return "stop", "OPT OUT" end
    if find(t, "^[A-Z0-9][A-Z0-9]+$") and #t <= 20 then return "list", t end
    return nil
end

-- Moves the contact of phone to state (source) unless it is in that state
-- already; a move is appended to consent_events. The contact row is locked
-- first, so the event's from_state is the one it replaced.
local SET_STATE <const> = [[
    WITH old AS (
        SELECT id, consent FROM contacts WHERE phone_number = $1 FOR UPDATE),
    moved AS (
        UPDATE contacts c SET consent = $2, consent_source = $3, consent_at = now(), updated_at = now()
        FROM old WHERE c.id = old.id AND old.consent <> $2
        RETURNING c.id)
    INSERT INTO consent_events (phone_number, contact_id, from_state, to_state, source, message_id)
    SELECT $1, old.id, old.consent, $2, $3, $4 FROM old JOIN moved ON moved.id = old.id
    RETURNING id]]

-- Returns true when the contact's consent moved.
local function set_state(tx, phone, state, source, message_id)
    return #tx:query(SET_STATE, phone, state, source, message_id or db.null) > 0
end

local function suppress(tx, phone, source)
    tx:query([[
        INSERT INTO suppressions (phone_number, source) VALUES ($1, $2)
        ON CONFLICT (phone_number) DO NOTHING]], phone, source)
end

local function unsuppress(tx, phone)
    tx:query("DELETE FROM suppressions WHERE phone_number = $1", phone)
end

-- The confirmation goes once, when the contact moves to opted_out: an
-- opted-out contact gets nothing more, another STOP included.
local function stop(tx, church, contact, message_id)
    local moved = set_state(tx, contact.phone, "opted_out", "keyword", message_id)
    suppress(tx, contact.phone, "keyword")
    if not moved then return nil end
    return church.name .. ": you are unsubscribed and will get no more messages. Reply START to resubscribe.",
        true
end

local function start(tx, church, contact, message_id)
    set_state(tx, contact.phone, "opted_in", "keyword", message_id)
    unsuppress(tx, contact.phone)
    return church.name .. ": you are subscribed again. Reply STOP to unsubscribe, HELP for help.", false
end

local function help(_, church)
    local text = church.name .. ": reply STOP to unsubscribe."
    if church.help_text ~= nil and church.help_text ~= "" then text = text .. " " .. church.help_text end
    return text, true
end

local function join(tx, church, contact, message_id, word)
    -- kept from being deleted meanwhile; KEY SHARE lets other joins move its member count
    local list = tx:query("SELECT id, name FROM lists WHERE keyword = $1 FOR KEY SHARE", word)[1]
    if list == nil then return nil end
    set_state(tx, contact.phone, "opted_in", "keyword", message_id)
    unsuppress(tx, contact.phone)
    tx:query([[
        INSERT INTO list_members (list_id, contact_id) VALUES ($1, $2)
        ON CONFLICT (list_id, contact_id) DO NOTHING]], list.id, contact.id)
    return church.name .. ": you joined " .. list.name .. ". Reply STOP to unsubscribe.", false
end

local APPLY <const> = { stop = stop, start = start, help = help, list = join }

function M.apply(tx, church, contact, kind, word, message_id)
    return APPLY[kind](tx, church, contact, message_id, word)
end

function M.carrier_opt_out(handle, phone)
    db.transaction(handle, function(tx)
        set_state(tx, phone, "opted_out", "carrier", nil)
        suppress(tx, phone, "carrier")
    end)
end

return M
