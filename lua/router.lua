-- Path router: a trie of path segments built at registration time.
--
-- Patterns are absolute paths whose segments are literals or "{name}"
-- parameters, e.g. /api/conversations/{id}/messages. A parameter matches
-- exactly one non-empty segment and is returned raw (not percent-decoded).
-- Where a literal and a parameter could both take a segment, the literal is
-- tried first; the other branch is tried only when the literal one cannot
-- serve the request. Paths are matched exactly: no trailing-slash or
-- double-slash folding, and the query string must already be removed.
--
-- Beside its methods a pattern may carry options, in lower case:
--   body_bytes = n   the largest request body its routes accept (an integer,
--                    1 B to 1 GiB), instead of limits.body_bytes.
--   media_type = s   the Content-Type its bodies must have (e.g. "text/csv"),
--                    instead of application/json; false: its requests carry
--                    no body, and no Content-Type is asked of them.

local type, pairs, ipairs, error, setmetatable, tostring = type, pairs, ipairs, error, setmetatable, tostring
local mathtype = math.type
local find, sub, match, format = string.find, string.sub, string.match, string.format
local sort, concat = table.sort, table.concat

local M = {}

local BODY_BYTES_MAX <const> = 1073741824 -- as limits.body_bytes

local Router = {}
Router.__index = Router

local function new_node()
    return { lit = {}, param = nil, route = nil }
end

-- Returns a new, empty router.
function M.new()
    return setmetatable({ root = new_node(), list = {}, static = {} }, Router)
end

-- Splits a pattern into a list of segment descriptions
-- ({ literal = "x" } or { param = "name" }). Raises on a malformed pattern.
local function parse_pattern(pattern)
    if type(pattern) ~= "string" or sub(pattern, 1, 1) ~= "/" then
        error(format("router: pattern must be a string starting with '/', got %s", tostring(pattern)), 3)
    end
    local segs, seen = {}, {}
    if pattern == "/" then return segs end
    for seg in (sub(pattern, 2) .. "/"):gmatch("([^/]*)/") do
        local name = match(seg, "^{(.*)}$")
        if seg == "" then
            error(format("router: empty segment in pattern '%s'", pattern), 3)
        elseif name then
            if not match(name, "^[%a_][%w_]*$") then
                error(format("router: bad parameter name '{%s}' in pattern '%s'", name, pattern), 3)
            elseif seen[name] then
                error(format("router: duplicate parameter '{%s}' in pattern '%s'", name, pattern), 3)
            end
            seen[name] = true
            segs[#segs + 1] = { param = name }
        elseif find(seg, "[{}?#%s]") then
            error(format("router: bad segment '%s' in pattern '%s'", seg, pattern), 3)
        else
            segs[#segs + 1] = { literal = seg }
        end
    end
    return segs
end

-- Checks a route option; returns it.
local function check_option(pattern, name, value)
    if name == "media_type" then
        if value == false then return value end
        if type(value) ~= "string" or not match(value, "^[%l%d.+-]+/[%l%d.+-]+$") then
            error(format("router: media_type for '%s' must be a lower-case type/subtype", pattern), 4)
        end
        return value
    elseif name ~= "body_bytes" then
        error(format("router: unknown option '%s' for '%s'", name, pattern), 4)
    elseif mathtype(value) ~= "integer" or value < 1 or value > BODY_BYTES_MAX then
        error(format("router: body_bytes for '%s' must be an integer from 1 to %d", pattern, BODY_BYTES_MAX), 4)
    end
    return value
end

-- Copies a {METHOD = handler} table after checking it; returns the copy,
-- the sorted method names and the options. Raises on bad input.
local function check_methods(pattern, methods)
    if type(methods) ~= "table" then
        error(format("router: methods for '%s' must be a table", pattern), 3)
    end
    local copy, names, options = {}, {}, {}
    for name, handler in pairs(methods) do
        if type(name) == "string" and match(name, "^%l[%l_]*$") then
            options[name] = check_option(pattern, name, handler)
        elseif type(name) ~= "string" or not match(name, "^%u+$") then
            error(format("router: bad method name '%s' for '%s'", tostring(name), pattern), 3)
        elseif type(handler) ~= "function" then
            error(format("router: handler for %s '%s' must be a function", name, pattern), 3)
        else
            copy[name] = handler
            names[#names + 1] = name
        end
    end
    if #names == 0 then
        error(format("router: no methods for '%s'", pattern), 3)
    end
    sort(names)
    return copy, names, options
end

-- Registers pattern with its {METHOD = handler} table. Returns nothing;
-- raises on a malformed pattern, bad methods or a pattern that is already
-- registered (parameter names do not distinguish patterns).
function Router:add(pattern, methods)
    local segs = parse_pattern(pattern)
    local handlers, names, options = check_methods(pattern, methods)
    local node, params = self.root, {}
    for _, seg in ipairs(segs) do
        if seg.literal then
            local child = node.lit[seg.literal]
            if not child then
                child = new_node()
                node.lit[seg.literal] = child
            end
            node = child
        else
            node.param = node.param or new_node()
            node = node.param
            params[#params + 1] = seg.param
        end
    end
    if node.route then
        error(format("router: pattern '%s' is already registered (as '%s')", pattern, node.route.pattern), 2)
    end
    node.route = {
        pattern = pattern, handlers = handlers, methods = names,
        params = params, allow = concat(names, ", "), body_bytes = options.body_bytes,
        media_type = options.media_type,
    }
    self.list[#self.list + 1] = node.route
    if #params == 0 then self.static[pattern] = node.route end
end

-- The segment starting at pos and the start of the next one (nil at the end).
local function segment_at(path, pos)
    local slash = find(path, "/", pos, true)
    if slash then return sub(path, pos, slash - 1), slash + 1 end
    return sub(path, pos), nil
end

-- Depth-first search for a route that has a handler for method; vals
-- collects parameter values in order. Returns the route or nil.
local function walk(node, path, pos, method, vals, nvals)
    if not pos then
        local route = node.route
        if route and route.handlers[method] then return route end
        return nil
    end
    local seg, next_pos = segment_at(path, pos)
    local child = node.lit[seg]
    if child then
        local route = walk(child, path, next_pos, method, vals, nvals)
        if route then return route end
    end
    child = node.param
    if child and seg ~= "" then
        vals[nvals + 1] = seg
        return walk(child, path, next_pos, method, vals, nvals + 1)
    end
    return nil
end

-- Adds to allowed the methods of every route whose pattern matches path.
local function collect_allowed(node, path, pos, allowed)
    if not pos then
        local route = node.route
        if route then
            for _, name in ipairs(route.methods) do allowed[name] = true end
        end
        return
    end
    local seg, next_pos = segment_at(path, pos)
    local child = node.lit[seg]
    if child then collect_allowed(child, path, next_pos, allowed) end
    if node.param and seg ~= "" then collect_allowed(node.param, path, next_pos, allowed) end
end

-- The "Allow" value for path (sorted, comma-separated) or nil when no
-- pattern matches it.
local function allow_for(root, path, pos)
    local allowed = {}
    collect_allowed(root, path, pos, allowed)
    local names = {}
    for name in pairs(allowed) do names[#names + 1] = name end
    if #names == 0 then return nil end
    sort(names)
    return concat(names, ", ")
end

-- Returns handler, params, pattern, body_bytes, media_type for method and
-- path, where params maps parameter names to raw segment values (a fresh
-- table), body_bytes is the route's own body limit or nil and media_type its
-- own Content-Type or nil. Otherwise returns
-- nil, "not_found" or nil, "method_not_allowed", allow (e.g. "GET, POST").
function Router:match(method, path)
    local static = self.static[path] -- parameterless patterns: one lookup
    if static and static.handlers[method] then
        return static.handlers[method], {}, static.pattern, static.body_bytes, static.media_type
    end
    if type(path) ~= "string" or sub(path, 1, 1) ~= "/" then return nil, "not_found" end
    local pos = path ~= "/" and 2 or nil
    local vals = {}
    local route = walk(self.root, path, pos, method, vals, 0)
    if route then
        local params = {}
        for i, name in ipairs(route.params) do params[name] = vals[i] end
        return route.handlers[method], params, route.pattern, route.body_bytes, route.media_type
    end
    local allow = allow_for(self.root, path, pos)
    if allow then return nil, "method_not_allowed", allow end
    return nil, "not_found"
end

-- Returns the registered routes sorted by pattern, as a fresh list of
-- { pattern = "/x", methods = { "GET", "POST" } }.
function Router:routes()
    local out = {}
    for i, route in ipairs(self.list) do
        local methods = {}
        for j, name in ipairs(route.methods) do methods[j] = name end
        out[i] = { pattern = route.pattern, methods = methods }
    end
    sort(out, function(a, b) return a.pattern < b.pattern end)
    return out
end

return M
