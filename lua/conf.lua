-- Configuration: schema, defaults, config-file loading, environment
-- overrides and validation.
--
-- A config file is a Lua chunk that returns a table such as
--     return { port = 9000, log = { level = "debug" }, limits = { body_bytes = 2097152 } }
-- It runs with a small sandbox environment (no os, io, require or load);
-- environment variables are read only through the overrides in the schema.

local type, pairs, ipairs, tostring, tonumber, error, pcall = type, pairs, ipairs, tostring, tonumber, error, pcall
local setmetatable, rawget, loadfile, next, select = setmetatable, rawget, loadfile, next, select
local sub, format, match, rep = string.sub, string.format, string.match, string.rep
local concat, sort = table.concat, table.sort
local tointeger, math_type = math.tointeger, math.type
local os_getenv = os.getenv
local netaddr = require "netaddr"

local M = {}

-- db.tenant_urls: every "name=postgresql://..." entry has a well-formed
-- name, used once (core/db_config.c reads the list).
local function check_tenant_urls(v)
    local seen = {}
    for entry in v:gmatch("[^,]+") do
        local name, url = match(entry, "^ *([^=]*)=(.*)$")
        if name and (sub(url, 1, 13) == "postgresql://" or sub(url, 1, 11) == "postgres://") then
            if not match(name, "^%l[%l%d_%-]*$") or #name > 32 then
                return format("'%s' is not a server name (a-z, then a-z, 0-9, _ or -; at most 32)", name)
            end
            if seen[name] then return format("the server name '%s' is used twice", name) end
            seen[name] = true
        end
    end
    return nil
end

-- "HH:MM", 24-hour clock
local function check_clock(v)
    local h, m = match(v, "^(%d%d):(%d%d)$")
    if h == nil or tonumber(h) > 23 or tonumber(m) > 59 then return "must be a time of day as HH:MM" end
end

local function check_allow_list(v)
    local _, err = netaddr.list(v)
    return err
end

-- The schema, in documentation order. Fields: key (dotted), type ("string",
-- "integer", "number" or "boolean"), default, optional (may be absent), min/max
-- (min_exclusive: min itself is not allowed), enum, nonempty, prefix, check
-- (a function of the value returning an error message or nil), env
-- (overriding environment variable), reloadable, doc.
local SCHEMA = {
    { key = "env", type = "string", default = "development", enum = { "development", "production" },
      env = "STEEPLE_ENV", reloadable = false,
      doc = "development generates missing keys into var/; production refuses to start without them" },
    { key = "listen", type = "string", default = "127.0.0.1", nonempty = true,
      env = "STEEPLE_LISTEN", reloadable = false, doc = "address to listen on" },
    { key = "port", type = "integer", default = 8080, min = 1, max = 65535,
      env = "PORT", reloadable = false, doc = "TCP port to listen on" },
    { key = "workers", type = "integer", default = 0, min = 0, max = 256,
      env = "STEEPLE_WORKERS", reloadable = false, doc = "worker processes; 0 means one per CPU core" },
    { key = "shutdown_timeout_s", type = "number", default = 10, min = 0, max = 3600,
      reloadable = true, doc = "seconds to let in-flight requests finish on shutdown" },
    { key = "threads", type = "integer", default = 2, min = 1, max = 64,
      reloadable = false, doc = "size of the CPU thread pool of each worker" },
    { key = "log.level", type = "string", default = "info", enum = { "debug", "info", "warn", "error" },
      reloadable = true, doc = "lowest level written to the log" },
    { key = "limits.body_bytes", type = "integer", default = 1048576, min = 1, max = 1073741824,
      reloadable = true, doc = "largest accepted request body, in bytes" },
    { key = "limits.header_bytes", type = "integer", default = 16384, min = 1024, max = 1048576,
      reloadable = true, doc = "largest accepted request header block, in bytes" },
    { key = "limits.read_timeout_s", type = "number", default = 30, min = 0, min_exclusive = true, max = 3600,
      reloadable = true, doc = "seconds a connection may stay idle while a request is read" },
    { key = "limits.request_timeout_s", type = "number", default = 30, min = 0, min_exclusive = true, max = 3600,
      reloadable = true, doc = "seconds a request handler may run before it is stopped" },
    { key = "limits.max_connections", type = "integer", default = 1024, min = 1, max = 1000000,
      reloadable = true, doc = "open connections per worker" },
    { key = "limits.max_connections_per_address", type = "integer", default = 512, min = 0, max = 1000000,
      reloadable = true,
      doc = "open connections one client address may hold per worker (0: any; raise it behind a proxy)" },
    { key = "limits.json_max_depth", type = "integer", default = 64, min = 1, max = 1000,
      reloadable = true, doc = "deepest nesting accepted in a JSON request body" },
    { key = "db.url", type = "string", optional = true, nonempty = true,
      env = "DATABASE_URL", reloadable = false,
      doc = "PostgreSQL URL of the registry database, on the server named main" },
    { key = "db.tenant_urls", type = "string", optional = true, nonempty = true, check = check_tenant_urls,
      env = "STEEPLE_TENANT_DATABASE_URLS", reloadable = false,
      doc = "comma-separated URLs (name=URL to name one) of the servers that hold tenant databases (default: main)" },
    { key = "db.pool_max", type = "integer", default = 4, min = 1, max = 1000,
      reloadable = false, doc = "connections per database, per worker" },
    { key = "db.server_max_connections", type = "integer", default = 80, min = 1, max = 100000,
      reloadable = false, doc = "connections per database server over all its databases and workers" },
    { key = "cluster.nodes", type = "integer", default = 1, min = 1, max = 10000,
      reloadable = true,
      doc = "steeple nodes that share each database server (doctor checks their budgets against max_connections)" },
    { key = "db.min_idle", type = "integer", default = 0, min = 0, max = 1000,
      reloadable = false, doc = "idle connections a pool keeps" },
    { key = "db.acquire_timeout_ms", type = "integer", default = 2000, min = 1, max = 600000,
      reloadable = false, doc = "waiting for a free connection before 503" },
    { key = "db.connect_timeout_ms", type = "integer", default = 3000, min = 1, max = 600000,
      reloadable = false, doc = "connecting to PostgreSQL" },
    { key = "db.statement_timeout_ms", type = "integer", default = 10000, min = 1, max = 3600000,
      reloadable = false, doc = "one statement, enforced by the server and by the core" },
    { key = "db.idle_timeout_s", type = "number", default = 60, min = 0, max = 86400,
      reloadable = false, doc = "idle connections beyond db.min_idle close after this" },
    { key = "db.breaker_failures", type = "integer", default = 5, min = 1, max = 1000,
      reloadable = false, doc = "consecutive failed connects that open a server's circuit breaker" },
    { key = "db.breaker_open_s", type = "number", default = 10, min = 0, min_exclusive = true, max = 3600,
      reloadable = false, doc = "how long an open breaker fails fast before one probe" },
    { key = "db.prepared_statements", type = "boolean", default = true,
      reloadable = false,
      doc = "prepare statements with parameters once per connection (false behind PgBouncer in transaction mode)" },
    { key = "db.migrations_dir", type = "string", default = "sql", nonempty = true,
      reloadable = false, doc = "directory holding registry/ and tenant/ migrations" },
    { key = "db.template", type = "string", default = "steeple_template", enum = { "steeple_template", "none" },
      reloadable = false,
      doc = "new tenant databases are copied from this migrated template (none: migrate each)" },
    { key = "tenants.capacity", type = "integer", default = 100, min = 1, max = 100000,
      reloadable = false, doc = "tenant database pools kept open per worker (least recently used closed)" },
    { key = "tenants.idle_s", type = "number", default = 1800, min = 0, min_exclusive = true, max = 604800,
      reloadable = false, doc = "a tenant pool unused this long is closed" },
    { key = "tenants.cache_ttl_s", type = "number", default = 30, min = 0, max = 86400,
      reloadable = false, doc = "how long a tenant's registry entry is cached" },
    { key = "tenants.provisioning_timeout_s", type = "number", default = 300, min = 10, max = 86400,
      reloadable = true,
      doc = "a registration still provisioning after this is undone by the janitor (database included)" },
    { key = "tenants.max_provisioning", type = "integer", default = 4, min = 1, max = 1000,
      reloadable = true, doc = "registrations in progress per worker; past it, 503 with Retry-After" },
    { key = "tenants.janitor_interval_s", type = "number", default = 60, min = 0, max = 86400,
      reloadable = true, doc = "how often the janitor looks for registrations cut short (0: never)" },
    { key = "auth.jwt_secret", type = "string", optional = true, min_bytes = 32, secret = true,
      env = "STEEPLE_JWT_SECRET", reloadable = false,
      doc = "HMAC key of the access tokens, at least 32 bytes" },
    { key = "auth.data_key", type = "string", optional = true, base64_bytes = 32, secret = true,
      env = "STEEPLE_DATA_KEY", reloadable = false,
      doc = "32 bytes, base64: the email blind-index and encryption keys are derived from it" },
    { key = "auth.access_ttl_s", type = "integer", default = 900, min = 60, max = 86400,
      reloadable = true, doc = "lifetime of an access token (expiresIn)" },
    { key = "auth.refresh_ttl_s", type = "integer", default = 2592000, min = 60, max = 31536000,
      reloadable = true, doc = "lifetime of a refresh token" },
    { key = "auth.max_failures", type = "integer", default = 5, min = 1, max = 100,
      reloadable = true, doc = "consecutive failed logins that lock an account" },
    { key = "auth.lock_initial_s", type = "integer", default = 30, min = 1, max = 86400,
      reloadable = true, doc = "the first lock's length; each further lock doubles it" },
    { key = "auth.lock_max_s", type = "integer", default = 3600, min = 1, max = 604800,
      reloadable = true, doc = "the longest lock" },
    { key = "auth.rate_per_min", type = "integer", default = 60, min = 0, max = 1000000,
      env = "STEEPLE_AUTH_RATE_PER_MIN", reloadable = true,
      doc = "requests to /api/auth/* per client address and minute, over all workers (0: off)" },
    { key = "auth.ipv6_prefix", type = "integer", default = 64, min = 1, max = 128,
      reloadable = true, doc = "an IPv6 client's address counts by this many leading bits (its network)" },
    { key = "auth.trusted_proxies", type = "string", optional = true, nonempty = true,
      charset = "[%x.:/, ]", reloadable = true,
      doc = "comma-separated addresses or CIDR blocks whose X-Forwarded-For is believed" },
    { key = "auth.argon2_memory_kib", type = "integer", default = 19456, min = 1024, max = 4194304,
      reloadable = false, doc = "argon2id memory per password hash, KiB (OWASP minimum: 19456)" },
    { key = "auth.argon2_iterations", type = "integer", default = 2, min = 1, max = 20,
      reloadable = false, doc = "argon2id passes (OWASP minimum with 19 MiB: 2)" },
    { key = "telnyx.public_key", type = "string", optional = true, base64_bytes = 32,
      env = "TELNYX_PUBLIC_KEY", reloadable = false,
      doc = "base64 Ed25519 public key that signs Telnyx webhooks" },
    { key = "telnyx.tolerance_s", type = "integer", default = 300, min = 1, max = 3600,
      reloadable = true, doc = "a webhook's timestamp may be this far from now" },
    { key = "telnyx.api_key", type = "string", optional = true, nonempty = true, secret = true,
      env = "TELNYX_API_KEY", reloadable = false, doc = "bearer key of the Telnyx API (outbound messages)" },
    { key = "telnyx.api_base", type = "string", default = "https://api.telnyx.com", prefix = "http",
      env = "TELNYX_API_BASE", reloadable = false, doc = "base URL of the Telnyx API" },
    { key = "telnyx.send_attempts", type = "integer", default = 5, min = 1, max = 20,
      reloadable = true, doc = "tries of an outbound message (on 5xx and timeouts) before it is failed" },
    { key = "telnyx.timeout_ms", type = "integer", default = 10000, min = 100, max = 120000,
      reloadable = true, doc = "one call to the Telnyx API, connect included" },
    { key = "telnyx.sweep_interval_s", type = "number", default = 5, min = 0, max = 3600,
      reloadable = true, doc = "how often queued outbound messages are looked for, after a restart too (0: never)" },
    { key = "telnyx.max_per_second", type = "number", default = 50, min = 0, max = 100000,
      reloadable = true,
      doc = "calls to the Telnyx API per second for broadcasts, over all workers and nodes (0: no limit)" },
    { key = "telnyx.max_in_flight", type = "integer", default = 16, min = 1, max = 1024,
      reloadable = true, doc = "broadcast calls to the Telnyx API under way at once, per worker" },
    { key = "messaging.rate_per_min", type = "integer", default = 60, min = 0, max = 1000000,
      reloadable = true,
      doc = "broadcast sends per church in any 60 seconds, over all workers and nodes (0: no limit)" },
    { key = "messaging.daily_cap", type = "integer", default = 2000, min = 0, max = 100000000,
      reloadable = true, doc = "broadcast sends per church in 24 hours (0: no limit)" },
    { key = "messaging.dispatch_interval_s", type = "number", default = 1, min = 0, max = 60,
      reloadable = true, doc = "how often each worker looks for churches whose broadcasts are due (0: never)" },
    { key = "messaging.quiet_start", type = "string", default = "21:00", check = check_clock,
      reloadable = true, doc = "quiet hours begin (HH:MM, the recipient's time zone): no broadcast sends" },
    { key = "messaging.quiet_end", type = "string", default = "08:00", check = check_clock,
      reloadable = true, doc = "quiet hours end (HH:MM); equal to quiet_start: no quiet hours" },
    { key = "metrics.allow", type = "string", default = "127.0.0.0/8,::1", nonempty = true,
      check = check_allow_list, reloadable = true,
      doc = "comma-separated client addresses or CIDR blocks (IPv4, IPv6) that may read /metrics" },
    { key = "spool.dir", type = "string", default = "var/spool", nonempty = true,
      env = "STEEPLE_SPOOL_DIR", reloadable = false, doc = "directory of the durable webhook spool" },
    { key = "spool.after_ms", type = "integer", default = 1000, min = 10, max = 60000,
      reloadable = true, doc = "a database slower than this for a webhook counts as down: the event is spooled" },
    { key = "spool.replay_interval_s", type = "number", default = 1, min = 0.1, max = 3600,
      reloadable = true, doc = "how often spooled webhooks are tried again" },
    { key = "spool.give_up_s", type = "number", default = 3600, min = 0, max = 2592000,
      reloadable = true,
      doc = "a spooled webhook whose church's database has been missing this long goes to the dead letters" },
    { key = "contacts.import_max_bytes", type = "integer", default = 5242880, min = 1, max = 1073741824,
      reloadable = true, doc = "the largest CSV body POST /api/contacts/import reads (413 past it)" },
    { key = "contacts.import_max_rows", type = "integer", default = 50000, min = 1, max = 10000000,
      reloadable = true, doc = "the most data rows one contacts import may hold (400 past it)" },
    { key = "bench.plain_path", type = "string", optional = true, nonempty = true, prefix = "/",
      reloadable = false,
      doc = "if set, the C core answers this exact path with a fixed plain 'ok' (benchmarks only)" },
}

local BY_KEY, SECTIONS = {}, {}
for _, entry in ipairs(SCHEMA) do
    local section, name = match(entry.key, "^([^.]+)%.(.+)$")
    entry.section, entry.name = section, name or entry.key
    if section then SECTIONS[section] = true end
    BY_KEY[entry.key] = entry
end

-- A read-only copy of t (nested tables too); ipairs, pairs and # work.
local function readonly(t)
    local view = {}
    for k, v in pairs(t) do
        view[k] = type(v) == "table" and readonly(v) or v
    end
    return setmetatable({}, {
        __index = view,
        __newindex = function() error("conf.schema is read-only", 2) end,
        __len = function() return #view end,
        __pairs = function() return next, view, nil end,
        __metatable = false,
    })
end

-- Read-only schema: conf.schema[i] is the i-th entry (documentation order),
-- conf.schema[key] the entry for a dotted key.
do
    local index = {}
    for i, entry in ipairs(SCHEMA) do
        local view = readonly(entry)
        index[i], index[entry.key] = view, view
    end
    M.schema = setmetatable({}, {
        __index = index,
        __newindex = function() error("conf.schema is read-only", 2) end,
        __len = function() return #SCHEMA end,
        __pairs = function() return ipairs(index) end,
        __metatable = false,
    })
end

-- Value of entry in the nested table t, or nil.
local function get(t, entry)
    if entry.section then
        local sub_t = rawget(t, entry.section)
        if type(sub_t) ~= "table" then return nil end
        return rawget(sub_t, entry.name)
    end
    return rawget(t, entry.key)
end

local function set(t, entry, value)
    if entry.section then
        t[entry.section] = t[entry.section] or {}
        t[entry.section][entry.name] = value
    else
        t[entry.key] = value
    end
end

-- Returns a fresh nested table holding every default.
function M.defaults()
    local cfg = {}
    for section in pairs(SECTIONS) do cfg[section] = {} end
    for _, entry in ipairs(SCHEMA) do
        if entry.default ~= nil then set(cfg, entry, entry.default) end
    end
    return cfg
end

-- Returns whether the dotted key can change on reload without a restart.
-- Raises on a key that is not in the schema.
function M.reloadable(key)
    local entry = BY_KEY[key]
    if not entry then error(format("conf.reloadable: unknown key '%s'", tostring(key)), 2) end
    return entry.reloadable
end

-- Returns the list (schema order) of dotted keys whose values differ
-- between two configurations but cannot change without a restart.
function M.diff_restart(old_cfg, new_cfg)
    local keys = {}
    for _, entry in ipairs(SCHEMA) do
        if not entry.reloadable and get(old_cfg, entry) ~= get(new_cfg, entry) then
            keys[#keys + 1] = entry.key
        end
    end
    return keys
end

local function show_number(n)
    return math_type(n) == "float" and format("%g", n) or tostring(n)
end

-- Checks the range of a numeric value; returns an error message or nil.
local function check_range(entry, v)
    local min, max = entry.min, entry.max
    if entry.min_exclusive then
        if not (v > min and v <= max) then
            return format("must be greater than %s and at most %s", show_number(min), show_number(max))
        end
    elseif not (v >= min and v <= max) then
        return format("must be between %s and %s", show_number(min), show_number(max))
    end
    return nil
end

-- True when s is the padded standard base64 of exactly n bytes.
local function base64_of(s, n)
    local chars = 4 * ((n + 2) // 3)
    local pad = (3 - n % 3) % 3
    return #s == chars and match(sub(s, 1, chars - pad), "^[%w+/]+$") ~= nil
        and sub(s, chars - pad + 1) == rep("=", pad)
end

-- Checks the string constraints; returns an error message or nil.
local function check_string(entry, v)
    if entry.enum then
        for _, allowed in ipairs(entry.enum) do
            if v == allowed then return nil end
        end
        return "must be one of " .. concat(entry.enum, ", ")
    end
    if entry.nonempty and v == "" then return "must not be empty" end
    if entry.prefix and sub(v, 1, #entry.prefix) ~= entry.prefix then
        return format("must start with '%s'", entry.prefix)
    end
    if entry.min_bytes and #v < entry.min_bytes then
        return format("must be at least %d bytes", entry.min_bytes)
    end
    if entry.base64_bytes and not base64_of(v, entry.base64_bytes) then
        return format("must be %d bytes in base64", entry.base64_bytes)
    end
    if entry.charset and match(v, "^" .. entry.charset .. "*$") == nil then
        return "contains characters that are not allowed"
    end
    if entry.check then return entry.check(v) end
    return nil
end

-- Returns the normalised value, or nil and a message (without the key).
local function validate(entry, v)
    local t = entry.type
    if t == "integer" then
        if type(v) ~= "number" then return nil, "expected integer, got " .. type(v) end
        local n = tointeger(v)
        if not n then return nil, "expected integer, got " .. show_number(v) end
        local err = check_range(entry, n)
        if err then return nil, err end
        return n
    elseif t == "number" then
        if type(v) ~= "number" then return nil, "expected number, got " .. type(v) end
        local err = check_range(entry, v)
        if err then return nil, err end
        return v
    elseif t == "boolean" then
        if type(v) ~= "boolean" then return nil, "expected boolean, got " .. type(v) end
        return v
    end
    if type(v) ~= "string" then return nil, "expected string, got " .. type(v) end
    local err = check_string(entry, v)
    if err then return nil, err end
    return v
end

-- Converts an environment string to the entry's type, or returns nil.
local function parse_env(entry, raw)
    if entry.type == "integer" then
        return match(raw, "^[-+]?%d+$") and tointeger(tonumber(raw)) or nil
    elseif entry.type == "number" then
        if not match(raw, "^[-+]?%d*%.?%d+$") and not match(raw, "^[-+]?%d+%.?%d*[eE][-+]?%d+$") then
            return nil
        end
        return tonumber(raw)
    end
    return raw
end

-- Keys of t, sorted by their string form (for deterministic error reports).
local function sorted_keys(t)
    local keys = {}
    for k in next, t do keys[#keys + 1] = k end
    sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    return keys
end

-- Returns nil, or an error message for the first key of the file's table
-- that is not in the schema or a section that is not a table.
local function check_unknown(t)
    for _, k in ipairs(sorted_keys(t)) do
        if SECTIONS[k] then
            local section = t[k]
            if type(section) ~= "table" then
                return format("config: %s: expected table, got %s", k, type(section))
            end
            for _, sk in ipairs(sorted_keys(section)) do
                if type(sk) ~= "string" or not BY_KEY[k .. "." .. sk] then
                    return format("config: unknown key '%s.%s'", k, tostring(sk))
                end
            end
        elseif type(k) ~= "string" or not BY_KEY[k] or BY_KEY[k].section then
            return format("config: unknown key '%s'", tostring(k))
        end
    end
    return nil
end

-- Merges the file's table t over cfg. Returns true or nil, message.
local function apply_file(cfg, t)
    local err = check_unknown(t)
    if err then return nil, err end
    for _, entry in ipairs(SCHEMA) do
        local v = get(t, entry)
        if v ~= nil then
            local value, msg = validate(entry, v)
            if value == nil then return nil, format("config: %s: %s", entry.key, msg) end
            set(cfg, entry, value)
        end
    end
    return true
end

-- Applies the environment overrides to cfg. Returns true or nil, message.
local function apply_env(cfg, getenv)
    for _, entry in ipairs(SCHEMA) do
        local raw = entry.env and getenv(entry.env)
        if raw ~= nil and raw ~= "" then
            if type(raw) ~= "string" then
                error(format("conf.load: getenv('%s') returned a %s", entry.env, type(raw)), 3)
            end
            local where = format("config: %s (%s): ", entry.env, entry.key)
            local parsed = parse_env(entry, raw)
            if parsed == nil then
                return nil, format("%sexpected %s, got '%s'", where, entry.type, raw)
            end
            local value, msg = validate(entry, parsed)
            if value == nil then return nil, where .. msg end
            set(cfg, entry, value)
        end
    end
    return true
end

-- The globals a config file may use.
local function sandbox()
    local math_copy, string_copy = {}, {}
    for k, v in pairs(math) do math_copy[k] = v end
    for k, v in pairs(string) do string_copy[k] = v end
    return {
        tostring = tostring, tonumber = tonumber, type = type,
        pairs = pairs, ipairs = ipairs, select = select, error = error,
        math = math_copy, string = string_copy,
    }
end

-- Prefixes msg with "config: " and, unless msg already names it, the path.
local function file_error(path, msg)
    msg = tostring(msg)
    if sub(msg, 1, #path + 1) == path .. ":" then return "config: " .. msg end
    return format("config: %s: %s", path, msg)
end

-- Runs the config file; returns its table or nil, message.
local function read_file(path)
    local chunk, err = loadfile(path, "t", sandbox())
    if not chunk then return nil, file_error(path, err) end
    local ok, t = pcall(chunk)
    if not ok then return nil, file_error(path, t) end
    if type(t) ~= "table" then
        return nil, file_error(path, "expected the file to return a table, got " .. type(t))
    end
    return t
end

-- Returns the complete configuration (a plain nested table, every key set
-- except an unset bench.plain_path) built from the defaults, the file at
-- path (nil: none) and the environment read through getenv(name)
-- (default os.getenv; empty values count as unset), in that order of
-- precedence, lowest first. Returns nil, message when anything is invalid.
function M.load(path, getenv)
    if path ~= nil and type(path) ~= "string" then error("conf.load: path must be a string or nil", 2) end
    getenv = getenv or os_getenv
    if type(getenv) ~= "function" then error("conf.load: getenv must be a function", 2) end
    local cfg = M.defaults()
    if path then
        local t, err = read_file(path)
        if not t then return nil, err end
        local ok, msg = apply_file(cfg, t)
        if not ok then return nil, msg end
    end
    local ok, msg = apply_env(cfg, getenv)
    if not ok then return nil, msg end
    return cfg
end

return M
