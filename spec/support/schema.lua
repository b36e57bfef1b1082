-- JSON values checked against the subset of JSON Schema (2020-12) that
-- lua/openapi.json keeps to, and the walks over an OpenAPI document that
-- the specs need.
--
--   local schema = require "support.schema"
--   local c = schema.new(doc)      doc: the decoded OpenAPI document
--   c:resolve(node)                -> node, following local "$ref"s ("#/components/..."); raises on a bad one
--   c:check(value, s)              -> true, or false and a list of "<where>: <what>" messages
--   schema.problems(doc)           -> list of "<where>: <what>": unresolved "$ref"s and schemas that use
--                                     keywords outside the subset
--
-- The subset: type (a name or a list of names; "null" stands for JSON null),
-- enum, required, properties, additionalProperties (a schema), items, allOf,
-- "$ref" (its sibling keywords apply too), minLength, maxLength, minimum,
-- maximum, minItems, maxItems. Annotations, not checked: description, title,
-- default, examples, format, deprecated, readOnly, writeOnly.
--
-- Values are as lua-cjson decodes them: JSON null is cjson.null, every number
-- may be a float (an integral one counts as an integer), and an empty table
-- is both an empty object and an empty array.
local cjson = require "cjson"

local M = {}

local NULL = cjson.null

local KEYWORDS = {
    type = true, enum = true, required = true, properties = true, additionalProperties = true,
    items = true, allOf = true, ["$ref"] = true, minLength = true, maxLength = true,
    minimum = true, maximum = true, minItems = true, maxItems = true,
    description = true, title = true, default = true, examples = true, format = true,
    deprecated = true, readOnly = true, writeOnly = true,
}
M.KEYWORDS = KEYWORDS

-- "array", "object" or "empty" (a table with no keys) for a table.
local function table_kind(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    if n == 0 then return "empty" end
    if #t == n then return "array" end
    return "object"
end

local function is_type(value, name)
    local t = type(value)
    if name == "null" then return value == NULL end
    if name == "boolean" then return t == "boolean" end
    if name == "string" then return t == "string" end
    if name == "number" then return t == "number" end
    if name == "integer" then
        return t == "number" and value == value and value ~= math.huge and value ~= -math.huge
            and math.floor(value) == value
    end
    if name == "array" or name == "object" then
        if t ~= "table" then return false end
        local kind = table_kind(value)
        return kind == "empty" or kind == name
    end
    error("schema: unknown type name " .. tostring(name))
end

local function describe(value)
    if value == NULL then return "null" end
    if type(value) == "table" then return table_kind(value) == "array" and "an array" or "an object" end
    if type(value) == "string" then return string.format("%q", value) end
    return tostring(value)
end

local function deep_equal(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do
        if not deep_equal(v, b[k]) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end

-- The node a JSON pointer of the document names ("#/a/b~1c").
local function pointer(doc, ref)
    if type(ref) ~= "string" or ref:sub(1, 2) ~= "#/" then return nil end
    local node = doc
    for part in (ref:sub(3) .. "/"):gmatch("([^/]*)/") do
        part = part:gsub("~1", "/"):gsub("~0", "~")
        if type(node) ~= "table" then return nil end
        node = node[part]
    end
    return node
end

local Checker = {}
Checker.__index = Checker

function M.new(doc)
    return setmetatable({ doc = doc }, Checker)
end

function Checker:resolve(node)
    local seen = 0
    while type(node) == "table" and node["$ref"] ~= nil do
        local target = pointer(self.doc, node["$ref"])
        if target == nil then error("schema: unresolved $ref " .. tostring(node["$ref"]), 2) end
        seen = seen + 1
        if seen > 32 then error("schema: $ref loop at " .. node["$ref"], 2) end
        node = target
    end
    return node
end

local check -- forward

local function check_type(value, s, at, errs)
    local names = type(s.type) == "table" and s.type or { s.type }
    for _, name in ipairs(names) do
        if is_type(value, name) then return true end
    end
    errs[#errs + 1] = string.format("%s: %s is not of type %s", at, describe(value), table.concat(names, "|"))
    return false
end

local function check_object(self, value, s, at, errs)
    for _, name in ipairs(s.required or {}) do
        if value[name] == nil then errs[#errs + 1] = string.format("%s: required property %q is missing", at, name) end
    end
    for name, v in pairs(value) do
        local sub = s.properties and s.properties[name]
        if sub == nil then sub = s.additionalProperties end
        if type(sub) == "table" then check(self, v, sub, at .. "." .. tostring(name), errs) end
    end
end

local function check_array(self, value, s, at, errs)
    if s.minItems and #value < s.minItems then errs[#errs + 1] = at .. ": fewer than " .. s.minItems .. " items" end
    if s.maxItems and #value > s.maxItems then errs[#errs + 1] = at .. ": more than " .. s.maxItems .. " items" end
    if s.items then
        for i, v in ipairs(value) do check(self, v, s.items, at .. "[" .. (i - 1) .. "]", errs) end
    end
end

local function check_scalar(value, s, at, errs)
    if type(value) == "string" then
        local n = utf8.len(value) or #value
        if s.minLength and n < s.minLength then errs[#errs + 1] = at .. ": shorter than " .. s.minLength end
        if s.maxLength and n > s.maxLength then errs[#errs + 1] = at .. ": longer than " .. s.maxLength end
    elseif type(value) == "number" then
        if s.minimum and value < s.minimum then errs[#errs + 1] = at .. ": below " .. s.minimum end
        if s.maximum and value > s.maximum then errs[#errs + 1] = at .. ": above " .. s.maximum end
    end
end

function check(self, value, s, at, errs)
    if s["$ref"] ~= nil then
        check(self, value, self:resolve({ ["$ref"] = s["$ref"] }), at, errs)
    end
    for _, sub in ipairs(s.allOf or {}) do check(self, value, sub, at, errs) end
    if s.type ~= nil and not check_type(value, s, at, errs) then return end
    if s.enum ~= nil then
        local found = false
        for _, allowed in ipairs(s.enum) do
            if deep_equal(value, allowed) then found = true end
        end
        if not found then errs[#errs + 1] = string.format("%s: %s is not in the enum", at, describe(value)) end
    end
    if type(value) == "table" then
        local kind = table_kind(value)
        if kind ~= "array" then check_object(self, value, s, at, errs) end
        if kind ~= "object" then check_array(self, value, s, at, errs) end
    else
        check_scalar(value, s, at, errs)
    end
end

function Checker:check(value, s)
    local errs = {}
    check(self, value, s, "$", errs)
    if #errs > 0 then return false, errs end
    return true
end

-- Walks -------------------------------------------------------------------------

-- Calls fn(schema, where) for s and every schema inside it.
local function each_subschema(s, where, fn)
    if type(s) ~= "table" then return end
    fn(s, where)
    for name, sub in pairs(s.properties or {}) do each_subschema(sub, where .. "/properties/" .. name, fn) end
    for i, sub in ipairs(s.allOf or {}) do each_subschema(sub, where .. "/allOf/" .. (i - 1), fn) end
    if type(s.items) == "table" then each_subschema(s.items, where .. "/items", fn) end
    if type(s.additionalProperties) == "table" then
        each_subschema(s.additionalProperties, where .. "/additionalProperties", fn)
    end
end

-- Calls fn(schema, where) for every schema of the document: the components'
-- schemas and every "schema" member of a parameter, header or media type.
local function each_schema(doc, fn)
    local function walk(node, where)
        if type(node) ~= "table" then return end
        for k, v in pairs(node) do
            local here = where .. "/" .. tostring(k)
            if k == "schema" and type(v) == "table" then
                each_subschema(v, here, fn)
            elseif k == "schemas" and where == "#/components" then
                for name, s in pairs(v) do each_subschema(s, here .. "/" .. name, fn) end
            else
                walk(v, here)
            end
        end
    end
    walk(doc, "#")
end
M.each_schema = each_schema

function M.problems(doc)
    local out = {}
    local function walk(node, where)
        if type(node) ~= "table" then return end
        for k, v in pairs(node) do
            if k == "$ref" and pointer(doc, v) == nil then
                out[#out + 1] = where .. ": unresolved $ref " .. tostring(v)
            end
            walk(v, where .. "/" .. tostring(k))
        end
    end
    walk(doc, "#")
    each_schema(doc, function(s, where)
        for k in pairs(s) do
            if not KEYWORDS[k] then out[#out + 1] = where .. ": keyword " .. tostring(k) .. " is outside the subset" end
        end
        if s.type ~= nil then
            for _, name in ipairs(type(s.type) == "table" and s.type or { s.type }) do
                if not ({ null = 1, boolean = 1, string = 1, number = 1, integer = 1, array = 1, object = 1 })[name] then
                    out[#out + 1] = where .. ": unknown type " .. tostring(name)
                end
            end
        end
    end)
    table.sort(out)
    return out
end

return M
