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

local type, pairs, ipairs, setmetatable = type, pairs, ipairs, setmetatable
local find, lower, match, sub, byte = string.find, string.lower, string.match, string.sub, string.byte
local utf8_len = utf8.len
local concat = table.concat

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

-- Checks a string's encoding and characters; returns its length in characters
-- or nil, message.
local function text_length(s)
    local n = utf8_len(s)
    if n == nil then return nil, "must be valid UTF-8" end
    if find(s, "%c") then return nil, "must not contain control characters" end
    return n
end

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

local function length_rule(opts, clean)
    local min, max = opts.min or 1, opts.max
    local range = min == max and ("must be " .. min .. " characters")
        or ("must be " .. min .. " to " .. max .. " characters")
    local max_bytes = CHAR_BYTES * max + (clean and PADDING_MAX or 0)
    return function(value)
        if type(value) ~= "string" then return nil, "must be a string" end
        if #value > max_bytes then return nil, range end
        if clean then value = clean(value) end
        local n, err = text_length(value)
        if n == nil then return nil, err end
        if n < min or n > max then return nil, range end
        return value
    end
end

-- Marks a rule optional: absent or null is fine (the field stays nil).
local function with_options(rule, opts)
    return { rule = rule, optional = opts.optional }
end

-- Text of opts.min..opts.max characters, surrounding white space removed.
function M.text(opts)
    return with_options(length_rule(opts, trim), opts)
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
    local rule = with_options(function(value)
        if type(value) ~= "string" or not allowed[value] then return nil, message end
        return value
    end, { optional = opts.default ~= nil or opts.optional })
    rule.default = opts.default
    return rule
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
