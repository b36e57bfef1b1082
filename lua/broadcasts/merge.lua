-- Merge fields of a broadcast's text: {{firstName}}, {{lastName}} and
-- {{churchName}}, each with an optional fallback used when the value is
-- empty ({{firstName|friend}}).
--
--   merge.parse(text)            -> template, or nil, message (an unknown
--                                   field, an unclosed "{{", a fallback
--                                   with "{", "}" or "|")
--   merge.render(template, values) -> the text for one recipient; values
--                                   holds firstName, lastName, churchName
--                                   (nil or "" for none)
--   merge.bounds(template, values, longest)
--       -> the fewest and the most characters any recipient's text can
--          have: a field named in values counts as its value, the others
--          as empty (or the fallback) at the least and as longest[field]
--          characters at the most.
--
-- A template is a list of literal strings and { field = name, fallback = s }.

local type, ipairs = type, ipairs
local find, sub, match = string.find, string.sub, string.match
local utf8_len = utf8.len
local concat = table.concat

local M = {}

local FIELDS <const> = { firstName = true, lastName = true, churchName = true }

function M.parse(text)
    local template, pos = {}, 1
    while true do
        local open = find(text, "{{", pos, true)
        if open == nil then break end
        local close = find(text, "}}", open + 2, true)
        if close == nil then return nil, "has a \"{{\" that is not closed" end
        local inner = sub(text, open + 2, close - 1)
        local name, bar, fallback = match(inner, "^%s*([%a]+)%s*(|?)(.*)$")
        if name == nil or not FIELDS[name] then
            return nil, "has an unknown merge field {{" .. inner .. "}}"
        end
        if bar == "" and fallback ~= "" then return nil, "has an unknown merge field {{" .. inner .. "}}" end
        if find(fallback, "[{}|]") then return nil, "has a merge field fallback with \"{\", \"}\" or \"|\"" end
        if open > pos then template[#template + 1] = sub(text, pos, open - 1) end
        template[#template + 1] = { field = name, fallback = fallback }
        pos = close + 2
    end
    if pos <= #text then template[#template + 1] = sub(text, pos) end
    return template
end

local function value_of(part, values)
    local v = values[part.field]
    if type(v) ~= "string" or v == "" then return part.fallback end
    return v
end

function M.render(template, values)
    local out = {}
    for i, part in ipairs(template) do
        out[i] = type(part) == "string" and part or value_of(part, values)
    end
    return concat(out)
end

function M.bounds(template, values, longest)
    local least, most = 0, 0
    for _, part in ipairs(template) do
        if type(part) == "string" then
            local n = utf8_len(part)
            least, most = least + n, most + n
        elseif values[part.field] ~= nil then
            local n = utf8_len(value_of(part, values))
            least, most = least + n, most + n
        else
            local fallback = utf8_len(part.fallback)
            local longest_value = longest[part.field] or 0
            least = least + fallback
            most = most + (longest_value > fallback and longest_value or fallback)
        end
    end
    return least, most
end

return M
