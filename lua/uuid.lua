-- UUIDs, the id format of tenants, admins and tokens.
--
--   uuid.new()      -> a random (version 4) UUID in lower-case text form
--   uuid.valid(s)   -> true when s is a UUID in text form

local crypto = require "steeple.crypto"

local type, find, format, byte = type, string.find, string.format, string.byte

local M = {}

local PATTERN <const> = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

function M.valid(s)
    return type(s) == "string" and find(s, PATTERN) ~= nil
end

function M.new()
    local b = { byte(crypto.random(16), 1, 16) }
    b[7] = (b[7] & 0x0f) | 0x40 -- version 4
    b[9] = (b[9] & 0x3f) | 0x80 -- RFC 4122 variant
    return format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16])
end

return M
