-- No value reaches SQL text: every statement in lua/ is a literal, joined
-- only with constants (UPPER_CASE names) and the column-list helpers, and
-- values travel as $n parameters. This reads the sources as text.

local function lua_files()
    local p = assert(io.popen("find lua -name '*.lua' | sort"))
    local files = {}
    for path in p:lines() do files[#files + 1] = path end
    p:close()
    return files
end

-- What may be joined to SQL text.
local ALLOWED = {
    "^[A-Z][A-Z0-9_]*$",                          -- a constant
    '^iso%(""%)$',                                -- conversations.lua: a literal column, formatted
    "^conversations%.message_columns%(%)$",        -- the message columns
    "^M%.message_columns%(%)$",
    "^p$",                                         -- message_columns' prefix ("" or "m.")
    "^where_sql%(where%)$",                        -- contacts/store.lua: conditions of constants and $n
    "^placeholder%(#params %+ 1%)$",               -- contacts/store.lua: "$n"
}

local SQL_WORDS = { "SELECT", "INSERT", "UPDATE", "DELETE", "RETURNING", "FROM", " AS " }

local function looks_like_sql(line)
    for _, w in ipairs(SQL_WORDS) do
        if line:find(w, 1, true) then return true end
    end
    return line:find("%]%] %.%.") ~= nil or line:find("%.%. %[%[") ~= nil
end

local function allowed(operand)
    operand = operand:gsub("^%s+", ""):gsub("%s+$", "")
    if operand:match('^".*"$') or operand:match("^%[%[") or operand:match("%]%]$") then return true end
    for _, pattern in ipairs(ALLOWED) do
        if operand:match(pattern) then return true end
    end
    return false
end

describe("SQL text in lua/", function()
    it("joins only constants and column helpers, never values", function()
        local offences = {}
        local checked = 0
        for _, path in ipairs(lua_files()) do
            local n = 0
            for line in io.lines(path) do
                n = n + 1
                if looks_like_sql(line) and line:find("..", 1, true) and not line:match("^%s*%-%-") then
                    checked = checked + 1
                    -- the operands between `..`, with string literals removed
                    local bare = line:gsub('"[^"]*"', '""'):gsub("%[%[.-%]%]", "[[]]")
                    for operand in (bare .. " .."):gmatch("([^%.]-[%w_%)%]\"]+)%s*%.%.") do
                        local last = operand:match("[%w_%.]+%b()$") or operand:match("[%w_%.]+$")
                            or operand:match('""$') or operand:match("%]%]$")
                        if last and not allowed(last) then
                            offences[#offences + 1] = string.format("%s:%d: %s", path, n, line)
                        end
                    end
                end
            end
        end
        assert.is_true(checked > 0, "no SQL line was checked: the scan is broken")
        assert.same({}, offences)
    end)

    it("would catch a value joined to a statement", function()
        assert.is_false(allowed("email"))
        assert.is_false(allowed("req.params.id"))
        assert.is_true(allowed("COLUMNS"))
    end)
end)
