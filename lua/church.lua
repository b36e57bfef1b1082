-- The API's church object.
--
--   church.json(entry) -> { id, name, phoneNumber, timeZone, helpText } of a
--       tenant entry (tenants.lookup); a new church's entry may leave out
--       time_zone and help_text, which then read as the registry's defaults

local M = {}

-- The defaults of sql/registry/0004_church_settings.sql.
local DEFAULT_TIME_ZONE <const> = "America/New_York"
local DEFAULT_HELP_TEXT <const> = ""

function M.json(entry)
    return {
        id = entry.id, name = entry.name, phoneNumber = entry.phone,
        timeZone = entry.time_zone or DEFAULT_TIME_ZONE, helpText = entry.help_text or DEFAULT_HELP_TEXT,
    }
end

return M
