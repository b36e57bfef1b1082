-- Secrets the specs send (passwords, emails, tokens, message texts), written
-- to $STEEPLE_SPEC_LOGS/secrets so that spec 99 can look for them in the
-- logs of every server of the suite. Without STEEPLE_SPEC_LOGS nothing is kept.
--
--   secrets.add(s, ...)   strings of at least 10 bytes are kept, one per line
local M = {}

local dir = os.getenv("STEEPLE_SPEC_LOGS")

function M.add(...)
    if dir == nil then return end
    local f = io.open(dir .. "/secrets", "a")
    if f == nil then return end
    for i = 1, select("#", ...) do
        local s = select(i, ...)
        if type(s) == "string" and #s >= 10 and not s:find("\n", 1, true) then f:write(s, "\n") end
    end
    f:close()
end

M.dir = dir

return M
