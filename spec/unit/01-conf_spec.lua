local conf = require "conf"

local tmpfiles = {}

-- Writes text to a fresh temporary file and returns its path.
local function config_file(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    tmpfiles[#tmpfiles + 1] = path
    return path
end

-- A getenv function backed by a table.
local function env(vars)
    return function(name) return vars[name] end
end

local function load_text(text, vars)
    return conf.load(config_file(text), env(vars or {}))
end

local EXPECTED_DEFAULTS = {
    env = "development",
    listen = "127.0.0.1",
    port = 8080,
    workers = 0,
    shutdown_timeout_s = 10,
    threads = 2,
    log = { level = "info" },
    limits = {
        body_bytes = 1048576,
        header_bytes = 16384,
        read_timeout_s = 30,
        request_timeout_s = 30,
        max_connections = 1024,
        max_connections_per_address = 512,
        json_max_depth = 64,
    },
    db = {
        pool_max = 4,
        server_max_connections = 80,
        min_idle = 0,
        acquire_timeout_ms = 2000,
        connect_timeout_ms = 3000,
        statement_timeout_ms = 10000,
        idle_timeout_s = 60,
        breaker_failures = 5,
        breaker_open_s = 10,
        prepared_statements = true,
        migrations_dir = "sql",
        template = "steeple_template",
    },
    cluster = { nodes = 1 },
    tenants = { capacity = 100, idle_s = 1800, cache_ttl_s = 30, provisioning_timeout_s = 300,
                max_provisioning = 4, janitor_interval_s = 60 },
    auth = {
        access_ttl_s = 900, refresh_ttl_s = 2592000, max_failures = 5, lock_initial_s = 30,
        lock_max_s = 3600, rate_per_min = 60, ipv6_prefix = 64, argon2_memory_kib = 19456, argon2_iterations = 2,
    },
    telnyx = { tolerance_s = 300, api_base = "https://api.telnyx.com", send_attempts = 5, timeout_ms = 10000,
               sweep_interval_s = 5, max_per_second = 50, max_in_flight = 16 },
    messaging = { rate_per_min = 60, daily_cap = 2000, dispatch_interval_s = 1, quiet_start = "21:00",
                  quiet_end = "08:00" },
    metrics = { allow = "127.0.0.0/8,::1" },
    spool = { dir = "var/spool", after_ms = 1000, replay_interval_s = 1, give_up_s = 3600 },
    contacts = { import_max_bytes = 5242880, import_max_rows = 50000 },
    bench = {},
}

local DB_KEYS = {
    "db.url", "db.tenant_urls", "db.pool_max", "db.server_max_connections", "cluster.nodes",
    "db.min_idle", "db.acquire_timeout_ms", "db.connect_timeout_ms", "db.statement_timeout_ms", "db.idle_timeout_s",
    "db.breaker_failures", "db.breaker_open_s", "db.prepared_statements", "db.migrations_dir", "db.template",
    "tenants.capacity", "tenants.idle_s", "tenants.cache_ttl_s",
}

-- Keys after DB_KEYS, with whether they reload.
local LATER_KEYS = {
    { "tenants.provisioning_timeout_s", true }, { "tenants.max_provisioning", true },
    { "tenants.janitor_interval_s", true },
    { "auth.jwt_secret", false }, { "auth.data_key", false }, { "auth.access_ttl_s", true },
    { "auth.refresh_ttl_s", true }, { "auth.max_failures", true }, { "auth.lock_initial_s", true },
    { "auth.lock_max_s", true }, { "auth.rate_per_min", true }, { "auth.ipv6_prefix", true },
    { "auth.trusted_proxies", true },
    { "auth.argon2_memory_kib", false }, { "auth.argon2_iterations", false },
    { "telnyx.public_key", false }, { "telnyx.tolerance_s", true }, { "telnyx.api_key", false },
    { "telnyx.api_base", false }, { "telnyx.send_attempts", true }, { "telnyx.timeout_ms", true },
    { "telnyx.sweep_interval_s", true }, { "telnyx.max_per_second", true }, { "telnyx.max_in_flight", true },
    { "messaging.rate_per_min", true }, { "messaging.daily_cap", true }, { "messaging.dispatch_interval_s", true },
    { "messaging.quiet_start", true }, { "messaging.quiet_end", true }, { "metrics.allow", true }, { "spool.dir", false },
    { "spool.after_ms", true },
    { "spool.replay_interval_s", true }, { "spool.give_up_s", true },
    { "contacts.import_max_bytes", true }, { "contacts.import_max_rows", true },
}
local LATER_NAMES = {}
for i, k in ipairs(LATER_KEYS) do LATER_NAMES[i] = k[1] end
local SPEC_KEY = "c3BlYy1kYXRhLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="

describe("conf", function()
    after_each(function()
        for _, path in ipairs(tmpfiles) do os.remove(path) end
        tmpfiles = {}
    end)

    describe("defaults", function()
        it("holds every default", function()
            assert.same(EXPECTED_DEFAULTS, conf.defaults())
        end)

        it("returns a fresh table each time", function()
            local a = conf.defaults()
            a.port = 1
            a.limits.body_bytes = 1
            assert.equal(8080, conf.defaults().port)
            assert.equal(1048576, conf.defaults().limits.body_bytes)
        end)

        it("is what load gives without a file or environment", function()
            local cfg = assert(conf.load(nil, env({})))
            assert.same(EXPECTED_DEFAULTS, cfg)
            assert.is_nil(cfg.bench.plain_path)
            assert.equal("integer", math.type(cfg.port))
        end)
    end)

    describe("schema", function()
        it("lists every key in documentation order", function()
            local keys = {}
            for i, entry in ipairs(conf.schema) do keys[i] = entry.key end
            local expected = {
                "env", "listen", "port", "workers", "shutdown_timeout_s", "threads", "log.level",
                "limits.body_bytes", "limits.header_bytes", "limits.read_timeout_s",
                "limits.request_timeout_s", "limits.max_connections", "limits.max_connections_per_address",
                "limits.json_max_depth",
            }
            for _, k in ipairs(DB_KEYS) do expected[#expected + 1] = k end
            for _, k in ipairs(LATER_NAMES) do expected[#expected + 1] = k end
            expected[#expected + 1] = "bench.plain_path"
            assert.same(expected, keys)
            assert.equal(69, #conf.schema)
        end)

        it("looks entries up by key", function()
            assert.equal(8080, conf.schema.port.default)
            assert.equal("PORT", conf.schema.port.env)
            assert.equal("integer", conf.schema["limits.body_bytes"].type)
            assert.same({ "debug", "info", "warn", "error" },
                { table.unpack(conf.schema["log.level"].enum, 1, #conf.schema["log.level"].enum) })
        end)

        it("names the environment variables of the API contract", function()
            local names = {}
            for _, entry in ipairs(conf.schema) do
                if entry.env then names[entry.key] = entry.env end
            end
            assert.same({ env = "STEEPLE_ENV", listen = "STEEPLE_LISTEN", port = "PORT",
                workers = "STEEPLE_WORKERS", ["db.url"] = "DATABASE_URL",
                ["db.tenant_urls"] = "STEEPLE_TENANT_DATABASE_URLS", ["auth.jwt_secret"] = "STEEPLE_JWT_SECRET",
                ["auth.data_key"] = "STEEPLE_DATA_KEY", ["auth.rate_per_min"] = "STEEPLE_AUTH_RATE_PER_MIN",
                ["telnyx.public_key"] = "TELNYX_PUBLIC_KEY", ["telnyx.api_key"] = "TELNYX_API_KEY",
                ["telnyx.api_base"] = "TELNYX_API_BASE", ["spool.dir"] = "STEEPLE_SPOOL_DIR" }, names)
        end)

        it("is read-only, entries and nested tables included", function()
            assert.has_error(function() conf.schema.port = 1 end)
            assert.has_error(function() conf.schema[56] = {} end)
            assert.has_error(function() conf.schema.port.default = 1 end)
            assert.has_error(function() conf.schema["log.level"].enum[5] = "trace" end)
            assert.equal(8080, conf.schema.port.default)
        end)
    end)

    describe("file", function()
        it("is merged over the defaults, sections included", function()
            local cfg = assert(load_text([[
                return { port = 9000, log = { level = "debug" }, limits = { body_bytes = 2048 } }
            ]]))
            assert.equal(9000, cfg.port)
            assert.equal("debug", cfg.log.level)
            assert.equal(2048, cfg.limits.body_bytes)
            assert.equal(16384, cfg.limits.header_bytes)
            assert.equal("127.0.0.1", cfg.listen)
        end)

        it("sets every key", function()
            local cfg = assert(load_text([[
                return {
                    env = "production", listen = "0.0.0.0", port = 80, workers = 4,
                    shutdown_timeout_s = 2.5, threads = 8,
                    log = { level = "error" },
                    limits = { body_bytes = 10, header_bytes = 2048, read_timeout_s = 0.5,
                               request_timeout_s = 60, max_connections = 5, max_connections_per_address = 3,
                               json_max_depth = 8 },
                        db = { url = "postgresql:///r", tenant_urls = "postgresql:///a,postgresql:///b",
                           pool_max = 2, server_max_connections = 40, min_idle = 1,
                           acquire_timeout_ms = 100, connect_timeout_ms = 200, statement_timeout_ms = 300,
                           idle_timeout_s = 5, breaker_failures = 2, breaker_open_s = 1.5,
                           prepared_statements = false, migrations_dir = "m", template = "none" },
                    cluster = { nodes = 3 },
                    tenants = { capacity = 7, idle_s = 60, cache_ttl_s = 0, provisioning_timeout_s = 20,
                                max_provisioning = 2, janitor_interval_s = 2 },
                    auth = { jwt_secret = "0123456789abcdef0123456789abcdef", data_key = "]] .. SPEC_KEY .. [[",
                             access_ttl_s = 60, refresh_ttl_s = 120, max_failures = 3, lock_initial_s = 5,
                             lock_max_s = 50, rate_per_min = 7, ipv6_prefix = 56, trusted_proxies = "10.0.0.1",
                             argon2_memory_kib = 2048, argon2_iterations = 1 },
                    telnyx = { public_key = "]] .. SPEC_KEY .. [[", tolerance_s = 60, api_key = "k",
                               api_base = "http://127.0.0.1:9", send_attempts = 2, timeout_ms = 500,
                               sweep_interval_s = 1, max_per_second = 2.5, max_in_flight = 3 },
                    messaging = { rate_per_min = 120, daily_cap = 10, dispatch_interval_s = 2, quiet_start = "22:30", quiet_end = "07:15" },
                    metrics = { allow = "10.1.2.3" },
                    spool = { dir = "s", after_ms = 50, replay_interval_s = 0.5, give_up_s = 2 },
                    contacts = { import_max_bytes = 1000, import_max_rows = 10 },
                    bench = { plain_path = "/plain" },
                }
            ]]))
            assert.same({
                env = "production", listen = "0.0.0.0", port = 80, workers = 4,
                shutdown_timeout_s = 2.5, threads = 8, log = { level = "error" },
                limits = { body_bytes = 10, header_bytes = 2048, read_timeout_s = 0.5,
                           request_timeout_s = 60, max_connections = 5, max_connections_per_address = 3,
                           json_max_depth = 8 },
                db = { url = "postgresql:///r", tenant_urls = "postgresql:///a,postgresql:///b",
                       pool_max = 2, server_max_connections = 40, min_idle = 1,
                       acquire_timeout_ms = 100, connect_timeout_ms = 200, statement_timeout_ms = 300,
                       idle_timeout_s = 5, breaker_failures = 2, breaker_open_s = 1.5,
                       prepared_statements = false, migrations_dir = "m", template = "none" },
                cluster = { nodes = 3 },
                tenants = { capacity = 7, idle_s = 60, cache_ttl_s = 0, provisioning_timeout_s = 20,
                            max_provisioning = 2, janitor_interval_s = 2 },
                auth = { jwt_secret = "0123456789abcdef0123456789abcdef", data_key = SPEC_KEY,
                         access_ttl_s = 60, refresh_ttl_s = 120, max_failures = 3, lock_initial_s = 5,
                         lock_max_s = 50, rate_per_min = 7, ipv6_prefix = 56, trusted_proxies = "10.0.0.1",
                         argon2_memory_kib = 2048, argon2_iterations = 1 },
                telnyx = { public_key = SPEC_KEY, tolerance_s = 60, api_key = "k", api_base = "http://127.0.0.1:9",
                           send_attempts = 2, timeout_ms = 500, sweep_interval_s = 1,
                           max_per_second = 2.5, max_in_flight = 3 },
                messaging = { rate_per_min = 120, daily_cap = 10, dispatch_interval_s = 2, quiet_start = "22:30", quiet_end = "07:15" },
                metrics = { allow = "10.1.2.3" },
                spool = { dir = "s", after_ms = 50, replay_interval_s = 0.5, give_up_s = 2 },
                contacts = { import_max_bytes = 1000, import_max_rows = 10 },
                bench = { plain_path = "/plain" },
            }, cfg)
        end)

        it("accepts empty sections", function()
            local cfg = assert(load_text("return { log = {}, limits = {}, bench = {} }"))
            assert.same(EXPECTED_DEFAULTS, cfg)
        end)

        it("returns a fresh table on each load", function()
            local path = config_file("return { port = 9000 }")
            local a = assert(conf.load(path, env({})))
            local b = assert(conf.load(path, env({})))
            a.limits.body_bytes = 1
            assert.equal(1048576, b.limits.body_bytes)
        end)

        it("runs in a sandbox without os, io, require or load", function()
            local cfg = assert(load_text([[
                return { listen = type(os) .. type(io) .. type(require) .. type(load) .. type(dofile) }
            ]]))
            assert.equal("nilnilnilnilnil", cfg.listen)
        end)

        it("can use tostring, tonumber, math and string", function()
            local cfg = assert(load_text([[
                return { port = math.floor(9000.7), listen = string.rep("a", 2) .. tostring(tonumber("1")) }
            ]]))
            assert.equal(9000, cfg.port)
            assert.equal("aa1", cfg.listen)
        end)

        it("does not leak the file's globals", function()
            assert(load_text("leaked_by_config = 1; math.floor = nil; return {}"))
            assert.is_nil(rawget(_G, "leaked_by_config"))
            assert.is_function(math.floor)
        end)
    end)

    describe("file errors", function()
        it("reports a syntax error with the path and line", function()
            local path = config_file("return {\n  port = = 1\n}\n")
            local cfg, err = conf.load(path, env({}))
            assert.is_nil(cfg)
            assert.equal("config: " .. path .. ":2:", err:sub(1, #path + 11))
        end)

        it("reports an error raised by the file", function()
            local path = config_file("error('boom')")
            local cfg, err = conf.load(path, env({}))
            assert.is_nil(cfg)
            assert.equal("config: " .. path .. ":", err:sub(1, #path + 9))
            assert.truthy(err:find("boom", 1, true))
        end)

        it("reports a non-string error value raised by the file", function()
            local path = config_file("error({})")
            local _, err = conf.load(path, env({}))
            assert.equal("config: " .. path .. ": ", err:sub(1, #path + 10))
        end)

        it("reports a file that does not return a table", function()
            local path = config_file("return 42")
            assert.same({ nil, "config: " .. path .. ": expected the file to return a table, got number" },
                { conf.load(path, env({})) })
            path = config_file("local x = 1")
            assert.same({ nil, "config: " .. path .. ": expected the file to return a table, got nil" },
                { conf.load(path, env({})) })
        end)

        it("reports a missing file", function()
            local path = config_file("")
            os.remove(path)
            local cfg, err = conf.load(path, env({}))
            assert.is_nil(cfg)
            assert.equal("config: ", err:sub(1, 8))
            assert.truthy(err:find(path, 1, true))
        end)

        it("refuses binary chunks", function()
            local path = config_file(string.dump(function() return {} end))
            local cfg, err = conf.load(path, env({}))
            assert.is_nil(cfg)
            assert.truthy(err:find("config: " .. path, 1, true))
        end)
    end)

    describe("unknown keys", function()
        local cases = {
            { "return { limits = { bodybytes = 1 } }", "config: unknown key 'limits.bodybytes'" },
            { "return { prot = 1 }", "config: unknown key 'prot'" },
            { "return { level = 'info' }", "config: unknown key 'level'" },
            { "return { database = {} }", "config: unknown key 'database'" },
            { "return { 1 }", "config: unknown key '1'" },
            { "return { log = { 'x' } }", "config: unknown key 'log.1'" },
            { "return { log = { level = 'info', lvl = 1 } }", "config: unknown key 'log.lvl'" },
            { "return { bench = { plain = '/x' } }", "config: unknown key 'bench.plain'" },
        }
        for _, case in ipairs(cases) do
            it("stops loading: " .. case[2], function()
                assert.same({ nil, case[2] }, { load_text(case[1]) })
            end)
        end

        it("are reported in a stable order", function()
            for _ = 1, 5 do
                assert.same({ nil, "config: unknown key 'a'" }, { load_text("return { b = 1, a = 1, c = 1 }") })
            end
        end)

        it("reports a section that is not a table", function()
            assert.same({ nil, "config: limits: expected table, got number" }, { load_text("return { limits = 5 }") })
            assert.same({ nil, "config: log: expected table, got string" }, { load_text("return { log = 'debug' }") })
        end)
    end)

    describe("types", function()
        local cases = {
            { "limits = { body_bytes = '1' }", "config: limits.body_bytes: expected integer, got string" },
            { "port = '8080'", "config: port: expected integer, got string" },
            { "port = {}", "config: port: expected integer, got table" },
            { "port = 1.5", "config: port: expected integer, got 1.5" },
            { "workers = true", "config: workers: expected integer, got boolean" },
            { "shutdown_timeout_s = '1'", "config: shutdown_timeout_s: expected number, got string" },
            { "limits = { read_timeout_s = false }", "config: limits.read_timeout_s: expected number, got boolean" },
            { "listen = 1", "config: listen: expected string, got number" },
            { "log = { level = 3 }", "config: log.level: expected string, got number" },
            { "env = true", "config: env: expected string, got boolean" },
            { "bench = { plain_path = 1 }", "config: bench.plain_path: expected string, got number" },
            { "db = { prepared_statements = 'false' }", "config: db.prepared_statements: expected boolean, got string" },
            { "db = { prepared_statements = 0 }", "config: db.prepared_statements: expected boolean, got number" },
        }
        for _, case in ipairs(cases) do
            it("rejects " .. case[1], function()
                assert.same({ nil, case[2] }, { load_text("return { " .. case[1] .. " }") })
            end)
        end

        it("takes a boolean as it is, false included", function()
            assert.is_false(assert(load_text("return { db = { prepared_statements = false } }")).db.prepared_statements)
            assert.is_true(assert(load_text("return { db = { prepared_statements = true } }")).db.prepared_statements)
            assert.is_true(assert(load_text("return {}")).db.prepared_statements)
        end)

        it("accepts an integral float as an integer and stores an integer", function()
            local cfg = assert(load_text("return { port = 8080.0, limits = { body_bytes = 2.0 } }"))
            assert.equal(8080, cfg.port)
            assert.equal("integer", math.type(cfg.port))
            assert.equal("integer", math.type(cfg.limits.body_bytes))
        end)

        it("rejects floats too large to be integers", function()
            assert.same({ nil, "config: port: expected integer, got 1e+300" }, { load_text("return { port = 1e300 }") })
        end)

        it("accepts integers and floats for numbers", function()
            local cfg = assert(load_text("return { shutdown_timeout_s = 3, limits = { read_timeout_s = 0.25 } }"))
            assert.equal(3, cfg.shutdown_timeout_s)
            assert.equal(0.25, cfg.limits.read_timeout_s)
        end)
    end)

    describe("ranges", function()
        -- key, lowest allowed, highest allowed, message
        local ranges = {
            { "port", 1, 65535, "must be between 1 and 65535" },
            { "workers", 0, 256, "must be between 0 and 256" },
            { "shutdown_timeout_s", 0, 3600, "must be between 0 and 3600" },
            { "threads", 1, 64, "must be between 1 and 64" },
            { "limits.body_bytes", 1, 1073741824, "must be between 1 and 1073741824" },
            { "limits.header_bytes", 1024, 1048576, "must be between 1024 and 1048576" },
            { "limits.max_connections", 1, 1000000, "must be between 1 and 1000000" },
            { "limits.json_max_depth", 1, 1000, "must be between 1 and 1000" },
            { "cluster.nodes", 1, 10000, "must be between 1 and 10000" },
            { "tenants.max_provisioning", 1, 1000, "must be between 1 and 1000" },
            { "auth.ipv6_prefix", 1, 128, "must be between 1 and 128" },
            { "spool.give_up_s", 0, 2592000, "must be between 0 and 2592000" },
            { "contacts.import_max_bytes", 1, 1073741824, "must be between 1 and 1073741824" },
            { "contacts.import_max_rows", 1, 10000000, "must be between 1 and 10000000" },
        }

        local function file_for(key, value)
            local section, name = key:match("^(%w+)%.(.+)$")
            if section then
                return string.format("return { %s = { %s = %s } }", section, name, value)
            end
            return string.format("return { %s = %s }", key, value)
        end

        local function value_of(cfg, key)
            local section, name = key:match("^(%w+)%.(.+)$")
            if section then return cfg[section][name] end
            return cfg[key]
        end

        for _, r in ipairs(ranges) do
            local key, lo, hi, msg = r[1], r[2], r[3], r[4]
            it(key .. " accepts " .. lo .. " and " .. hi .. " and rejects values outside", function()
                assert.equal(lo, value_of(assert(load_text(file_for(key, lo))), key))
                assert.equal(hi, value_of(assert(load_text(file_for(key, hi))), key))
                local expected = { nil, "config: " .. key .. ": " .. msg }
                assert.same(expected, { load_text(file_for(key, lo - 1)) })
                assert.same(expected, { load_text(file_for(key, hi + 1)) })
            end)
        end

        for _, key in ipairs({ "limits.read_timeout_s", "limits.request_timeout_s" }) do
            it(key .. " must be above 0 and at most 3600", function()
                local expected = { nil, "config: " .. key .. ": must be greater than 0 and at most 3600" }
                assert.same(expected, { load_text(file_for(key, 0)) })
                assert.same(expected, { load_text(file_for(key, -1)) })
                assert.same(expected, { load_text(file_for(key, 3600.5)) })
                assert.same(expected, { load_text(file_for(key, "0/0")) })
                assert.equal(0.001, value_of(assert(load_text(file_for(key, 0.001))), key))
                assert.equal(3600, value_of(assert(load_text(file_for(key, 3600))), key))
            end)
        end

        it("rejects NaN and infinity for numbers", function()
            local msg = "config: shutdown_timeout_s: must be between 0 and 3600"
            assert.same({ nil, msg }, { load_text("return { shutdown_timeout_s = 0/0 }") })
            assert.same({ nil, msg }, { load_text("return { shutdown_timeout_s = math.huge }") })
        end)
    end)

    describe("strings", function()
        it("checks enums", function()
            assert.same({ nil, "config: log.level: must be one of debug, info, warn, error" },
                { load_text("return { log = { level = 'verbose' } }") })
            assert.same({ nil, "config: log.level: must be one of debug, info, warn, error" },
                { load_text("return { log = { level = 'INFO' } }") })
            assert.same({ nil, "config: env: must be one of development, production" },
                { load_text("return { env = 'staging' }") })
            for _, level in ipairs({ "debug", "info", "warn", "error" }) do
                assert.equal(level, assert(load_text("return { log = { level = '" .. level .. "' } }")).log.level)
            end
        end)

        it("refuses an empty listen address", function()
            assert.same({ nil, "config: listen: must not be empty" }, { load_text("return { listen = '' }") })
        end)

        it("takes bench.plain_path only as an absolute path", function()
            assert.equal("/bench/plain", assert(load_text("return { bench = { plain_path = '/bench/plain' } }"))
                .bench.plain_path)
            assert.same({ nil, "config: bench.plain_path: must not be empty" },
                { load_text("return { bench = { plain_path = '' } }") })
            assert.same({ nil, "config: bench.plain_path: must start with '/'" },
                { load_text("return { bench = { plain_path = 'plain' } }") })
        end)
    end)

    describe("environment", function()
        it("wins over the file", function()
            local path = config_file("return { port = 9000 }")
            assert.equal(9100, assert(conf.load(path, env({ PORT = "9100" }))).port)
            assert.equal(9000, assert(conf.load(path, env({}))).port)
        end)

        it("applies without a file", function()
            local cfg = assert(conf.load(nil, env({
                PORT = "9100", STEEPLE_LISTEN = "0.0.0.0", STEEPLE_WORKERS = "3", STEEPLE_ENV = "production",
            })))
            assert.equal(9100, cfg.port)
            assert.equal("integer", math.type(cfg.port))
            assert.equal("0.0.0.0", cfg.listen)
            assert.equal(3, cfg.workers)
            assert.equal("production", cfg.env)
        end)

        it("treats an empty value as unset", function()
            local path = config_file("return { port = 9000, listen = '10.0.0.1' }")
            local cfg = assert(conf.load(path, env({ PORT = "", STEEPLE_LISTEN = "" })))
            assert.equal(9000, cfg.port)
            assert.equal("10.0.0.1", cfg.listen)
        end)

        it("reads only the documented variables", function()
            local asked = {}
            assert(conf.load(nil, function(name) asked[#asked + 1] = name end))
            table.sort(asked)
            assert.same({ "DATABASE_URL", "PORT", "STEEPLE_AUTH_RATE_PER_MIN", "STEEPLE_DATA_KEY", "STEEPLE_ENV",
                "STEEPLE_JWT_SECRET", "STEEPLE_LISTEN", "STEEPLE_SPOOL_DIR", "STEEPLE_TENANT_DATABASE_URLS",
                "STEEPLE_WORKERS", "TELNYX_API_BASE", "TELNYX_API_KEY", "TELNYX_PUBLIC_KEY" }, asked)
        end)

        local cases = {
            { { PORT = "abc" }, "config: PORT (port): expected integer, got 'abc'" },
            { { PORT = "80.5" }, "config: PORT (port): expected integer, got '80.5'" },
            { { PORT = "0x50" }, "config: PORT (port): expected integer, got '0x50'" },
            { { PORT = " 80" }, "config: PORT (port): expected integer, got ' 80'" },
            { { PORT = "99999999999999999999" }, "config: PORT (port): expected integer, got '99999999999999999999'" },
            { { PORT = "0" }, "config: PORT (port): must be between 1 and 65535" },
            { { PORT = "70000" }, "config: PORT (port): must be between 1 and 65535" },
            { { STEEPLE_WORKERS = "-1" }, "config: STEEPLE_WORKERS (workers): must be between 0 and 256" },
            { { STEEPLE_WORKERS = "many" }, "config: STEEPLE_WORKERS (workers): expected integer, got 'many'" },
            { { STEEPLE_ENV = "staging" }, "config: STEEPLE_ENV (env): must be one of development, production" },
            { { STEEPLE_JWT_SECRET = ("s"):rep(31) },
              "config: STEEPLE_JWT_SECRET (auth.jwt_secret): must be at least 32 bytes" },
            { { STEEPLE_DATA_KEY = "c2hvcnQ=" }, "config: STEEPLE_DATA_KEY (auth.data_key): must be 32 bytes in base64" },
            { { STEEPLE_DATA_KEY = SPEC_KEY:sub(1, 43) .. "A" },
              "config: STEEPLE_DATA_KEY (auth.data_key): must be 32 bytes in base64" },
            { { STEEPLE_DATA_KEY = "!" .. SPEC_KEY:sub(2) },
              "config: STEEPLE_DATA_KEY (auth.data_key): must be 32 bytes in base64" },
            { { STEEPLE_AUTH_RATE_PER_MIN = "-1" },
              "config: STEEPLE_AUTH_RATE_PER_MIN (auth.rate_per_min): must be between 0 and 1000000" },
        }
        for _, case in ipairs(cases) do
            it("reports " .. case[2], function()
                assert.same({ nil, case[2] }, { conf.load(nil, env(case[1])) })
            end)
        end

        it("takes the keys and the rate limit", function()
            local cfg = assert(conf.load(nil, env({ STEEPLE_JWT_SECRET = ("s"):rep(32), STEEPLE_DATA_KEY = SPEC_KEY,
                STEEPLE_AUTH_RATE_PER_MIN = "0" })))
            assert.equal(("s"):rep(32), cfg.auth.jwt_secret)
            assert.equal(SPEC_KEY, cfg.auth.data_key)
            assert.equal(0, cfg.auth.rate_per_min)
        end)

        it("checks the characters of auth.trusted_proxies", function()
            assert(load_text([[return { auth = { trusted_proxies = "10.0.0.0/8, ::1" } }]]))
            assert.same({ nil, "config: auth.trusted_proxies: contains characters that are not allowed" },
                { load_text([[return { auth = { trusted_proxies = "proxy.example" } }]]) })
        end)

        it("checks metrics.allow: addresses and CIDR blocks, IPv4 and IPv6", function()
            local cfg = assert(load_text([[return { metrics = { allow = "10.0.0.0/8, 192.0.2.7 ,::1,fd00::/8" } }]]))
            assert.equal("10.0.0.0/8, 192.0.2.7 ,::1,fd00::/8", cfg.metrics.allow)
            for text, bad in pairs({ ["10.0.0.0/33"] = "10.0.0.0/33", ["localhost"] = "localhost",
                                     ["::1,"] = "", ["::1/129"] = "::1/129", ["1.2.3.256"] = "1.2.3.256",
                                     ["127.0.0.1,fe80::1::2"] = "fe80::1::2" }) do
                assert.same({ nil, "config: metrics.allow: '" .. bad .. "' is not an address or CIDR block" },
                    { load_text("return { metrics = { allow = " .. string.format("%q", text) .. " } }") })
            end
            assert.same({ nil, "config: metrics.allow: must not be empty" },
                { load_text([[return { metrics = { allow = "" } }]]) })
        end)

        it("checks the server names of db.tenant_urls", function()
            local urls = "east=postgresql://a/postgres, west_2=postgres://b/postgres,postgresql://c/postgres"
                .. ",host=/tmp port=5433 dbname=postgres,postgresql://d/p?options=-c%20x=y"
            assert.equal(urls, assert(conf.load(nil, env({ STEEPLE_TENANT_DATABASE_URLS = urls }))).db.tenant_urls)
            assert.same({ nil, "config: STEEPLE_TENANT_DATABASE_URLS (db.tenant_urls): 'East' is not a server name "
                .. "(a-z, then a-z, 0-9, _ or -; at most 32)" },
                { conf.load(nil, env({ STEEPLE_TENANT_DATABASE_URLS = "East=postgresql://a/postgres" })) })
            assert.same({ nil, "config: db.tenant_urls: the server name 'east' is used twice" },
                { load_text([[return { db = { tenant_urls = "east=postgresql://a/p,east=postgresql://b/p" } } ]]) })
            assert.same({ nil, "config: db.tenant_urls: '" .. ("a"):rep(33) .. "' is not a server name "
                .. "(a-z, then a-z, 0-9, _ or -; at most 32)" },
                { load_text("return { db = { tenant_urls = '" .. ("a"):rep(33) .. "=postgresql://a/p' } }") })
        end)

        it("does not hide an invalid file value", function()
            assert.same({ nil, "config: port: must be between 1 and 65535" },
                { load_text("return { port = 0 }", { PORT = "9100" }) })
        end)

        it("uses os.getenv when no function is given", function()
            local cfg = assert(conf.load(nil))
            local port = os.getenv("PORT")
            if port == nil or port == "" then
                assert.equal(8080, cfg.port)
            else
                assert.equal(tonumber(port), cfg.port)
            end
        end)
    end)

    describe("misuse", function()
        it("raises on a bad path or getenv", function()
            assert.has_error(function() conf.load(42, env({})) end)
            assert.has_error(function() conf.load(nil, "PORT") end)
            assert.has_error(function() conf.load(nil, function() return 8080 end) end)
        end)
    end)

    describe("reloadable", function()
        it("tells which keys can change without a restart", function()
            local expected = {
                env = false, listen = false, port = false, workers = false, shutdown_timeout_s = true,
                threads = false, ["log.level"] = true, ["limits.body_bytes"] = true,
                ["limits.header_bytes"] = true, ["limits.read_timeout_s"] = true,
                ["limits.request_timeout_s"] = true, ["limits.max_connections"] = true,
                ["limits.max_connections_per_address"] = true,
                ["limits.json_max_depth"] = true, ["bench.plain_path"] = false,
            }
            for _, key in ipairs(DB_KEYS) do expected[key] = false end
            expected["cluster.nodes"] = true -- read by doctor only
            for _, k in ipairs(LATER_KEYS) do expected[k[1]] = k[2] end
            local got = {}
            for _, entry in ipairs(conf.schema) do got[entry.key] = conf.reloadable(entry.key) end
            assert.same(expected, got)
        end)

        it("raises on an unknown key", function()
            assert.has_error(function() conf.reloadable("limits") end)
            assert.has_error(function() conf.reloadable("nope") end)
        end)
    end)

    describe("diff_restart", function()
        it("is empty for equal configurations", function()
            assert.same({}, conf.diff_restart(conf.defaults(), conf.defaults()))
        end)

        it("lists changed keys that need a restart, in schema order", function()
            local old, new = conf.defaults(), conf.defaults()
            new.threads, new.port, new.env = 4, 9000, "production"
            new.log.level, new.limits.body_bytes, new.shutdown_timeout_s = "debug", 1, 1
            assert.same({ "env", "port", "threads" }, conf.diff_restart(old, new))
        end)

        it("ignores changes to reloadable keys", function()
            local old, new = conf.defaults(), conf.defaults()
            new.log.level, new.limits.max_connections = "warn", 10
            assert.same({}, conf.diff_restart(old, new))
        end)

        it("notices bench.plain_path being set or cleared", function()
            local old, new = conf.defaults(), conf.defaults()
            new.bench.plain_path = "/plain"
            assert.same({ "bench.plain_path" }, conf.diff_restart(old, new))
            assert.same({ "bench.plain_path" }, conf.diff_restart(new, old))
        end)
    end)
end)
