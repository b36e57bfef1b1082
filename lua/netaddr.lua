-- IPv4 and IPv6 addresses and CIDR blocks, for allow lists.
--
--   netaddr.parse(text)      -> the address as 16 bytes (IPv4 as ::ffff:a.b.c.d,
--                               so an IPv4-mapped peer matches IPv4 blocks), or nil
--   netaddr.list(text)       -> a list of comma-separated items, each an address
--                               or address/bits ("127.0.0.0/8", "::1", "fd00::/8"),
--                               or nil and a message naming the first bad item
--   list:contains(address)   -> whether the address (e.g. req.remote; a zone
--                               such as %eth0 is ignored) is in one of the blocks

local tonumber, ipairs, setmetatable = tonumber, ipairs, setmetatable
local match, gmatch, find, format, sub, byte, rep = string.match, string.gmatch, string.find,
    string.format, string.sub, string.byte, string.rep
local pack, unpack = string.pack, table.unpack

local M = {}

local V4_PREFIX <const> = rep("\0", 10) .. "\255\255"

-- The four octets of a dotted quad, or nil.
local function octets(s)
    local a, b, c, d = match(s, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
    if a == nil then return nil end
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
    return a, b, c, d
end

-- "a:b:c" as a list of 16-bit numbers ("" gives none), or nil.
local function groups(part)
    local out = {}
    if part == "" then return out end
    for g in gmatch(part .. ":", "([^:]*):") do
        if not match(g, "^%x%x?%x?%x?$") then return nil end
        out[#out + 1] = tonumber(g, 16)
    end
    return out
end

local function ipv6(s)
    local head, quad = match(s, "^(.*:)(%d+%.%d+%.%d+%.%d+)$")
    if head then -- a dotted quad in the last 32 bits
        local a, b, c, d = octets(quad)
        if a == nil then return nil end
        s = head .. format("%x:%x", a * 256 + b, c * 256 + d)
    end
    local left, right = match(s, "^(.-)::(.*)$")
    local gl, gr
    if left then
        gl, gr = groups(left), groups(right)
        if gl == nil or gr == nil or #gl + #gr > 7 then return nil end
    else
        gl, gr = groups(s), {}
        if gl == nil or #gl ~= 8 then return nil end
    end
    local all = {}
    for _, g in ipairs(gl) do all[#all + 1] = g end
    for _ = 1, 8 - #gl - #gr do all[#all + 1] = 0 end
    for _, g in ipairs(gr) do all[#all + 1] = g end
    return pack(">I2I2I2I2I2I2I2I2", unpack(all))
end

function M.parse(s)
    local a, b, c, d = octets(s)
    if a then return V4_PREFIX .. pack("BBBB", a, b, c, d) end
    if find(s, ":", 1, true) then return ipv6(s) end
    return nil
end

-- An item of a list as { net = 16 bytes, bits = prefix length }, or nil.
local function block(item)
    local addr, bits = match(item, "^([^/]+)/(%d%d?%d?)$")
    local net = M.parse(addr or item)
    if net == nil then return nil end
    local v4 = sub(net, 1, 12) == V4_PREFIX and not find(addr or item, ":", 1, true)
    if bits == nil then return { net = net, bits = 128 } end
    bits = tonumber(bits)
    if bits > (v4 and 32 or 128) then return nil end
    return { net = net, bits = v4 and 96 + bits or bits }
end

local function in_block(a, b)
    local full, rest = b.bits // 8, b.bits % 8
    if sub(a, 1, full) ~= sub(b.net, 1, full) then return false end
    if rest == 0 then return true end
    local mask = (0xff << (8 - rest)) & 0xff
    return byte(a, full + 1) & mask == byte(b.net, full + 1) & mask
end

local List = {}
List.__index = List

function List:contains(address)
    local a = M.parse(match(address or "", "^([^%%]*)"))
    if a == nil then return false end
    for _, b in ipairs(self) do
        if in_block(a, b) then return true end
    end
    return false
end

function M.list(text)
    local list = setmetatable({}, List)
    for item in gmatch(text .. ",", "([^,]*),") do
        item = match(item, "^%s*(.-)%s*$")
        local b = block(item)
        if b == nil then return nil, format("'%s' is not an address or CIDR block", item) end
        list[#list + 1] = b
    end
    return list
end

return M
