-- The client behind a request, and the per-address limit on /api/auth/*.
--
--   client.address(req)   the client's address: the peer's, or, when the peer
--                         is a trusted proxy (auth.trusted_proxies), the
--                         nearest untrusted address of X-Forwarded-For
--   client.limit(req)     raises rate_limited (with Retry-After) when the
--                         address is over auth.rate_per_min; shared by workers.
--                         An IPv6 client counts by its first auth.ipv6_prefix
--                         bits (its /64 by default: one subscriber's network);
--                         an IPv4-mapped IPv6 address counts as the IPv4 one.
--
-- Trusted proxies are exact addresses (IPv4 or IPv6) or IPv4 CIDR blocks.

local config = require "steeple.config"
local ratelimit = require "steeple.ratelimit"
local errors = require "errors"
local validate = require "validate"

local tonumber, ipairs = tonumber, ipairs
local match, gmatch, find, reverse = string.match, string.gmatch, string.find, string.reverse
local trim = validate.trim

local M = {}

-- The longest X-Forwarded-For hop worth reading, white space included: an
-- IPv6 address is at most 45 characters.
local MAX_HOP <const> = 64

-- The IPv4 address as a 32-bit number, or nil.
local function ipv4(s)
    local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if a == nil then return nil end
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
    return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Parses auth.trusted_proxies into { exact = { [addr] = true }, blocks = { {net, mask} } }.
local function parse_trusted(text)
    local trusted = { exact = {}, blocks = {} }
    for item in gmatch(text or "", "[^,%s]+") do
        local addr, bits = match(item, "^([%d.]+)/(%d+)$")
        local n = addr and ipv4(addr)
        bits = tonumber(bits)
        if n and bits <= 32 then
            local mask = bits == 0 and 0 or (0xffffffff << (32 - bits)) & 0xffffffff
            trusted.blocks[#trusted.blocks + 1] = { net = n & mask, mask = mask }
        else
            trusted.exact[item] = true
        end
    end
    return trusted
end

local TRUSTED <const> = parse_trusted(config.auth.trusted_proxies)

local function is_trusted(addr)
    if TRUSTED.exact[addr] then return true end
    local n = ipv4(addr)
    if n == nil then return false end
    for _, b in ipairs(TRUSTED.blocks) do
        if n & b.mask == b.net then return true end
    end
    return false
end

local function looks_like_address(s)
    return #s <= 45 and find(s, "^[%x.:]+$") ~= nil
end

function M.address(req)
    local peer = req.remote
    local forwarded = req.headers["x-forwarded-for"]
    if forwarded == nil or not is_trusted(peer) then return peer end
    -- right to left (the hops of the reversed text): each hop was added by
    -- the proxy in front of it; the walk stops at the first untrusted one
    local client = peer
    for backwards in gmatch(reverse(forwarded), "[^,]+") do
        local hop = #backwards <= MAX_HOP and trim(reverse(backwards)) or ""
        if not looks_like_address(hop) then break end
        client = hop
        if not is_trusted(client) then break end
    end
    return client
end

-- The rate limit's key of a client address: its /ipv6_prefix for IPv6, the
-- address itself otherwise (and for text that is no address).
function M.key(address)
    return ratelimit.address_key(address, config.auth.ipv6_prefix) or address
end

function M.limit(req)
    local per_min = config.auth.rate_per_min
    if per_min <= 0 then return end
    local ok, retry_after = ratelimit.take(M.key(M.address(req)), per_min)
    if not ok then errors.raise("rate_limited", { headers = { ["Retry-After"] = retry_after } }) end
end

return M
