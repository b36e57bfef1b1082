-- Output of the steeple commands (lua/cli/*): one formatted line to stdout,
-- flushed at once, so that a command's lines show as they happen and keep
-- their order with what it writes to stderr.
--
--   local out = require("cli.out").line
--   out("%d tenants", n)     -- string.format's rules; the newline is added

local format = string.format
local stdout = io.stdout

local M = {}

function M.line(fmt, ...)
    stdout:write(format(fmt, ...), "\n")
    stdout:flush()
end

return M
