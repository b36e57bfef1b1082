-- Request validation: rules per field that collect every problem into the
-- `fields` map of a validation_failed error.
--
--   local v = require "validate"
--   local signup = v.object {
--       churchName = v.text { min = 2, max = 200 },
--       email = v.email(),
--       phoneNumber = v.phone { optional = true },
--   }
--   local input = signup(req:json())     -- cleaned values; raises validation_failed
--   local input, fields = signup:check(t) -- the same, returning nil, fields instead
--
--   v.text { min, max [, optional, default, keep_space, controls, message] }
--   v.password, v.email, v.phone, v.one_of { values }, v.url { max }, v.id(),
--   v.array { of = rule, max [, message, item_message] }
--
-- A rule is a function(value) -> cleaned value, or nil, message. A value
-- that is absent or JSON null is "required" unless the rule is optional.
-- Text is UTF-8, counted in characters, and never holds control characters.
-- Fields the rules do not name are ignored.
--
-- Every rule refuses a string longer than its longest valid value (plus
-- PADDING_MAX bytes of white space where it trims) before anything scans
-- it, and trim() is linear: a client's value never costs more than its
-- length allows.

local errors = require "errors"
local json = require "json"

local type, pairs, ipairs, setmetatable, next = type, pairs, ipairs, setmetatable, next
local find, lower, match, sub, byte = string.find, string.lower, string.match, string.sub, string.byte
local utf8_len = utf8.len
local concat = table.concat
local math_type = math.type

local M = {}

local NULL <const> = json.null

-- White space a trimmed value may carry around it, in bytes.
local PADDING_MAX <const> = 1024
-- The most bytes a UTF-8 character takes.
local CHAR_BYTES <const> = 4
-- The longest email address (RFC 5321 path, less the angle brackets).
local EMAIL_MAX <const> = 254
-- "+" and 15 digits.
local PHONE_MAX <const> = 16

-- What %s matches: space, \t, \n, \v, \f, \r.
local SPACE <const> = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }

-- s without the white space around it, in time linear in #s (the pattern
-- "^%s*(.-)%s*$" takes time quadratic in a run of spaces inside s).
local function trim(s)
    local first = find(s, "%S")
    if first == nil then return "" end
    local last = #s
    while SPACE[byte(s, last)] do last = last - 1 end
    return sub(s, first, last)
end
M.trim = trim

-- opts.controls: control characters (new lines, tabs) are allowed;
-- opts.message replaces the message of a length out of range.
local function length_rule(opts, clean)
    local min, max = opts.min or 1, opts.max
    local range = opts.message or (min == max and ("must be " .. min .. " characters")
        or ("must be " .. min .. " to " .. max .. " characters"))
    local max_bytes = CHAR_BYTES * max + (clean and PADDING_MAX or 0)
    return function(value)
        if type(value) ~= "string" then return nil, "must be a string" end
        if #value > max_bytes then return nil, range end
        if clean then value = clean(value) end
        local n = utf8_len(value)
        if n == nil then return nil, "must be valid UTF-8" end
        if not opts.controls and find(value, "%c") then return nil, "must not contain control characters" end
        if n < min or n > max then return nil, range end
        return value
    end
end

-- Marks a rule optional: absent or null is fine (the field stays nil, or
-- takes opts.default, which makes the rule optional too).
local function with_options(rule, opts)
    return { rule = rule, optional = opts.optional or opts.default ~= nil, default = opts.default }
end

-- Text of opts.min..opts.max characters, surrounding white space removed
-- unless opts.keep_space.
function M.text(opts)
    return with_options(length_rule(opts, not opts.keep_space and trim or nil), opts)
end

-- A password: kept exactly as given.
function M.password(opts)
    return with_options(length_rule(opts), opts)
end

local LOCAL_CHARS <const> = "^[%w.!#$%%&'*+/=?^_`{|}~-]+$"

local function valid_domain(domain)
    if #domain > 253 or not find(domain, "%.") then return false end
    for label in (domain .. "."):gmatch("([^.]*)%.") do
        if #label == 0 or #label > 63 or not find(label, "^[%w-]+$")
            or find(label, "^%-") or find(label, "%-$") then
            return false
        end
    end
    return find(domain, "%.%a%a+$") ~= nil
end

-- True when s (already trimmed and lower-cased) is an email address we accept:
-- ASCII, one @, a dotted domain.
function M.is_email(s)
    if #s > EMAIL_MAX then return false end
    local user, domain = match(s, "^([^@]+)@([^@]+)$")
    if user == nil or #user > 64 or not find(user, LOCAL_CHARS) then return false end
    if find(user, "^%.") or find(user, "%.$") or find(user, "%.%.") then return false end
    return valid_domain(domain)
end

-- The form an email is stored and looked up in: trimmed, lower-cased.
function M.normalize_email(s)
    return lower(trim(s))
end

local EMAIL_MESSAGE <const> = "must be a valid email address"

-- An email address, normalized.
function M.email(opts)
    opts = opts or {}
    return with_options(function(value)
        if type(value) ~= "string" then return nil, "must be a string" end
        if #value > EMAIL_MAX + PADDING_MAX then return nil, EMAIL_MESSAGE end
        if find(value, "%c") then return nil, "must not contain control characters" end
        value = M.normalize_email(value)
        if not M.is_email(value) then return nil, EMAIL_MESSAGE end
        return value
    end, opts)
end

-- A phone number in E.164 form: + and 8 to 15 digits.
function M.phone(opts)
    opts = opts or {}
    return with_options(function(value)
        if type(value) ~= "string" then return nil, "must be a string" end
        if #value > PHONE_MAX or not find(value, "^%+%d%d%d%d%d%d%d%d%d?%d?%d?%d?%d?%d?%d?$") then
            return nil, "must be a phone number in E.164 form (+ and 8 to 15 digits)"
        end
        return value
    end, opts)
end

-- One of opts.values (a list of strings); opts.default when absent.
function M.one_of(opts)
    local allowed = {}
    for _, v in ipairs(opts.values) do allowed[v] = true end
    local message = "must be one of: " .. concat(opts.values, ", ")
    return with_options(function(value)
        if type(value) ~= "string" or not allowed[value] then return nil, message end
        return value
    end, opts)
end

-- An http or https URL of at most opts.max bytes (default 2048): no white
-- space or control characters.
function M.url(opts)
    opts = opts or {}
    local max = opts.max or 2048
    return with_options(function(value)
        if type(value) ~= "string" or #value > max or not find(value, "^[Hh][Tt][Tt][Pp][Ss]?://[^%s%c]+$") then
            return nil, "must be an http(s) URL"
        end
        return value
    end, opts)
end

-- The id format (a UUID in text form, as uuid.valid), lower-cased.
local ID_PATTERN <const> = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

function M.id(opts)
    opts = opts or {}
    return with_options(function(value)
        if type(value) ~= "string" or #value ~= 36 or not find(value, ID_PATTERN) then return nil, "must be an id" end
        return lower(value)
    end, opts)
end

-- The length of t when it is a JSON array (a table whose keys are 1..n)
-- of at most max items, else nil. Reads at most max + 1 keys. An empty
-- object decodes as an empty table and counts as an empty array.
local function array_length(t, max)
    if type(t) ~= "table" or t == NULL then return nil end
    local n = 0
    for k in next, t do
        n = n + 1
        if n > max or math_type(k) ~= "integer" or k < 1 or k > max then return nil end
    end
    for i = 1, n do
        if t[i] == nil then return nil end
    end
    return n
end

-- A JSON array of at most opts.max items, each checked by the rule opts.of;
-- the cleaned value is the list of cleaned items, repeated ones once.
-- opts.message names a wrong shape or length, opts.item_message a bad item
-- (default "item <i> <the item's message>").
function M.array(opts)
    local item, max = opts.of.rule, opts.max
    local message = opts.message or ("must be an array of at most " .. max .. " items")
    return with_options(function(value)
        local n = array_length(value, max)
        if n == nil then return nil, message end
        local out, seen = {}, {}
        for i = 1, n do
            local clean, err = item(value[i])
            if clean == nil then return nil, opts.item_message or ("item " .. i .. " " .. err) end
            if not seen[clean] then
                seen[clean] = true
                out[#out + 1] = clean
            end
        end
        return out
    end, opts)
end

local Object = {}
Object.__index = Object

-- Applies the rules to t; returns the cleaned values, or nil and the fields map.
function Object:check(t)
    local out, fields = {}, nil
    for name, spec in pairs(self.rules) do
        local value = t[name]
        if value == nil or value == NULL then
            if spec.optional then
                out[name] = spec.default
            else
                fields = fields or {}
                fields[name] = "is required"
            end
        else
            local clean, err = spec.rule(value)
            if clean == nil then
                fields = fields or {}
                fields[name] = err
            else
                out[name] = clean
            end
        end
    end
    if fields then return nil, fields end
    return out
end

Object.__call = function(self, t)
    local out, fields = self:check(t)
    if out == nil then errors.raise("validation_failed", { fields = fields }) end
    return out
end

-- A validator of a JSON object with the given field rules.
function M.object(rules)
    return setmetatable({ rules = rules }, Object)
end

return M
