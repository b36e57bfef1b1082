-- The fault suite's bench: three private clusters (the registry and two tenant
-- servers), churches on both tenant servers, a server under mixed load from
-- build/faults/loadgen, and the reading of what the load saw.
--
--   local faults = require "support.faults"
--   local bench = faults.bench()           clusters up, registry migrated, churches registered
--   bench.registry / bench.a / bench.b     clusters: :stop(), :start(), :url(db), :psql(db, sql)
--   bench.churches                         { email, password, token, conversation, phone, cluster }
--   bench:serve(opts)                      a server of 2 workers on this bench (support.server)
--   bench:load(srv, opts)                  starts the load generator; returns a Load
--   load:at(t, fn)                         runs fn once t seconds after the load started
--   load:wait()                            until the load is over -> load.result (see read_result)
--   bench:stored(ids)                      how often each payload id is stored, over every church
--   bench:settled(result, timeout)         waits until every acknowledged webhook is stored
--   bench:serves(srv, deadline)            waits until the server serves every kind
--                                          again (see below); true, or false at the deadline
--   faults.recovery_bound()                -> seconds, text: what the contract allows
--   faults.record(name, row), faults.note(text)   the results table (var/faults/results.md)
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"
local http = require "support.http"
local socket = require "socket"

local M = {}

M.SEED = "steeple-faults-webhook-key-00032" -- 32 bytes: the webhook signing key's seed
M.LOADGEN = server.ROOT .. "/build/faults/loadgen"
M.OUT = server.ROOT .. "/var/faults"
local q = server.quote

local function sh(cmd) return pg.sh(cmd, 120) end

-- Clusters --------------------------------------------------------------------

local Cluster = {}
Cluster.__index = Cluster

local function cluster(name)
    local self = setmetatable({ name = name, dir = M.OUT .. "/pg-" .. name }, Cluster)
    self.pg = "bash " .. q(server.ROOT .. "/scripts/pg.sh") .. " --dir " .. q(self.dir) .. " --tcp "
    return self
end

function Cluster:start()
    local out, ok = sh(self.pg .. "start")
    assert(ok, "cannot start cluster " .. self.name .. ": " .. out)
    self.base = assert(sh(self.pg .. "url"))
end

function Cluster:stop()
    local out, ok = sh(self.pg .. "stop")
    assert(ok, "cannot stop cluster " .. self.name .. ": " .. out)
end

function Cluster:destroy() sh(self.pg .. "destroy") end

function Cluster:url(db)
    return (self.base:gsub("/[^/]*$", "/" .. (db or "steeple")))
end

function Cluster:psql(db, sql)
    return sh("psql " .. q(self:url(db)) .. " -XAtq -v ON_ERROR_STOP=1 -c " .. q(sql))
end

-- Ends every connection steeple holds on this cluster; returns how many.
function Cluster:terminate_steeple()
    local out = self:psql("postgres", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity " ..
        "WHERE application_name = 'steeple' AND pid <> pg_backend_pid()")
    return tonumber(out) or 0
end

-- The bench -------------------------------------------------------------------

local Bench = {}
Bench.__index = Bench

local function public_key()
    local out, ok = sh(q(M.LOADGEN) .. " --public-key --seed " .. q(M.SEED))
    assert(ok and out:match("^[A-Za-z0-9+/=]+$"), "loadgen --public-key: " .. out)
    return out
end

-- The circuit breaker of every fault server (the defaults, written out: the
-- recovery bound is computed from them).
M.BREAKER = { failures = 5, open_s = 10, connect_timeout_ms = 3000 }

-- Settings of every fault server: 2 workers, cheap password hashes (logins
-- are part of the load, not its bottleneck), tokens that outlive the suite.
local function config(extra)
    local c = {
        workers = 2,
        db = { breaker_failures = M.BREAKER.failures, breaker_open_s = M.BREAKER.open_s,
               connect_timeout_ms = M.BREAKER.connect_timeout_ms },
        log = { level = "warn" },
        auth = { argon2_memory_kib = 4096, argon2_iterations = 1, access_ttl_s = 3600 },
        spool = { replay_interval_s = 0.5 },
        limits = { read_timeout_s = 10, request_timeout_s = 10 },
    }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
end

function Bench:env(extra)
    local env = {
        DATABASE_URL = self.registry:url("steeple"),
        STEEPLE_TENANT_DATABASE_URLS = self.a:url("postgres") .. "," .. self.b:url("postgres"),
        TELNYX_PUBLIC_KEY = self.public_key,
    }
    for k, v in pairs(extra or {}) do env[k] = v end
    return env
end

-- opts: config (merged over the fault settings), env, spool (directory),
-- port (to restart on the same one), scripts.
function Bench:serve(opts)
    opts = opts or {}
    local env = self:env(opts.env)
    if opts.spool then env.STEEPLE_SPOOL_DIR = opts.spool end
    return server.start { config = config(opts.config), env = env, port = opts.port,
        scripts = opts.scripts, timeout = 20 }
end

-- n churches, placed by the server on the two tenant servers in turn.
local function register(self, srv, n)
    local stamp = tostring(os.time())
    for i = 1, n do
        local c = { email = string.format("fault%d.%s@example.org", i, stamp),
                    password = "fault password " .. i, phone = string.format("+1777%07d", i) }
        local res = auth.post(srv, "/api/auth/register", { churchName = "Fault Church " .. i, email = c.email,
            password = c.password, adminName = "Admin " .. i, phoneNumber = c.phone })
        assert(res.status == 201, "register: " .. res.status .. " " .. (res.body or ""))
        c.token, c.tenant = res.json.accessToken, res.json.tenantId
        self.churches[i] = c
    end
    for _, c in ipairs(self.churches) do
        local server_key = self.registry:psql("steeple", "SELECT db_server || ' ' || db_name FROM tenants WHERE id = '"
            .. c.tenant .. "'")
        local key
        key, c.db = server_key:match("^(%S+) (%S+)$")
        -- a tenant server's key is "host:port"
        for _, cl in ipairs { self.a, self.b } do
            if cl:url():find(key .. "/", 1, true) then c.cluster = cl end
        end
        assert(c.cluster, "church " .. c.email .. " is on an unknown server: " .. tostring(server_key))
    end
end

-- One webhook per church, so each has a conversation to read.
local function seed(self, srv)
    local gen = self:load(srv, { seconds = 1, logins = 0, reads = 0, webhooks = 1, tag = "seed" })
    gen:wait()
    for _, c in ipairs(self.churches) do
        local res = auth.get(srv, "/api/conversations?limit=1", c.token)
        assert(res.status == 200 and res.json.conversations and res.json.conversations[1],
            "no conversation for church " .. c.email .. ": " .. (res.body or ""))
        c.conversation = res.json.conversations[1].id
    end
end

function M.bench(churches)
    os.execute("mkdir -p " .. q(M.OUT))
    assert(io.open(M.LOADGEN), M.LOADGEN .. " is missing (make test-faults builds it)"):close()
    local self = setmetatable({ churches = {}, runs = 0 }, Bench)
    self.registry, self.a, self.b = cluster("registry"), cluster("a"), cluster("b")
    for _, c in ipairs { self.registry, self.a, self.b } do c:destroy(); c:start() end
    self.public_key = public_key()
    for _, what in ipairs { "registry", "tenants" } do
        local status, err = server.run_binary({ "migrate", what }, self:env(), 120)
        assert(status == 0, "migrate " .. what .. ": " .. err)
    end
    local srv = self:serve()
    register(self, srv, churches or 4)
    seed(self, srv)
    srv:stop()
    return self
end

function Bench:destroy()
    for _, c in ipairs { self.registry, self.a, self.b } do c:destroy() end
end

-- The churches whose database is on a cluster.
function Bench:on(cl)
    local list = {}
    for _, c in ipairs(self.churches) do
        if c.cluster == cl then list[#list + 1] = c end
    end
    return list
end

-- The load -------------------------------------------------------------------

local Load = {}
Load.__index = Load

local function churches_file(path, list)
    local f = assert(io.open(path, "w"))
    for _, c in ipairs(list) do
        f:write(table.concat({ c.email, c.password, c.token, c.conversation or "", c.phone }, "\t"), "\n")
    end
    f:close()
end

-- opts: seconds, logins, reads, webhooks (clients of each kind), churches
-- (default all), tag (default: a new one per run), timeout.
function Bench:load(srv, opts)
    self.runs = self.runs + 1
    local tag = (opts.tag or "r") .. self.runs .. "x" .. os.time()
    local dir = server.tmpdir()
    churches_file(dir .. "/churches", opts.churches or self.churches)
    local args = { M.LOADGEN, "--port", srv.port, "--seconds", opts.seconds, "--out", dir,
        "--churches", dir .. "/churches", "--seed", M.SEED, "--tag", tag,
        "--logins", opts.logins or 1, "--reads", opts.reads or 4, "--webhooks", opts.webhooks or 8,
        "--timeout", opts.timeout or 5 }
    local quoted = {}
    for i, a in ipairs(args) do quoted[i] = q(a) end
    local cmd = string.format("(%s >%s 2>%s; echo $? >%s) </dev/null &", table.concat(quoted, " "),
        q(dir .. "/stdout"), q(dir .. "/stderr"), q(dir .. "/rc"))
    assert(os.execute(cmd))
    local gen = setmetatable({ dir = dir, tag = tag, seconds = opts.seconds, events = {} }, Load)
    assert(server.wait_until(function()
        local s = server.read_file(dir .. "/start")
        if s and s:match("%d") then gen.t0 = tonumber(s); return true end
        local out = server.read_file(dir .. "/stdout") or ""
        local t = out:match("started ([%d.]+)")
        if t then gen.t0 = tonumber(t); return true end
        return server.read_file(dir .. "/rc") ~= nil
    end, 10), "the load generator did not start")
    assert(gen.t0, "the load generator did not start: " .. (server.read_file(dir .. "/stderr") or ""))
    return gen
end

-- Seconds since the load started.
function Load:now() return socket.gettime() - self.t0 end

-- Sleeps until t seconds after the start, then runs fn (noting when).
function Load:at(t, fn, name)
    local wait = t - self:now()
    if wait > 0 then socket.sleep(wait) end
    local r = fn()
    if name then self.events[name] = self:now() end
    return r
end

function Load:wait()
    assert(server.wait_until(function() return server.read_file(self.dir .. "/rc") ~= nil end,
        self.seconds + 30), "the load generator did not finish")
    local rc = tonumber(server.read_file(self.dir .. "/rc"))
    assert(rc == 0, "loadgen exited " .. tostring(rc) .. ": " .. (server.read_file(self.dir .. "/stderr") or ""))
    self.result = M.read_result(self.dir)
    return self.result
end

-- Reading the outputs ------------------------------------------------------------

-- { timeline = { {sec, kind, outcome, count} }, webhooks = { id -> {acked, attempts, results} },
--   latency = { kind -> {count, p50, p99, max} }, elapsed = seconds }
function M.read_result(dir)
    local r = { timeline = {}, webhooks = {}, latency = {}, acked = {} }
    for line in (server.read_file(dir .. "/timeline.tsv") or ""):gmatch("[^\n]+") do
        local sec, kind, outcome, n = line:match("^(%d+)\t(%a+)\t(%w+)\t(%d+)$")
        assert(sec, "timeline.tsv: " .. line)
        r.timeline[#r.timeline + 1] = { sec = tonumber(sec), kind = kind, outcome = outcome, n = tonumber(n) }
    end
    for line in (server.read_file(dir .. "/webhooks.tsv") or ""):gmatch("[^\n]+") do
        local id, attempt, outcome, result = line:match("^(%S+)\t(%d+)\t(%w+)\t(%S+)\t")
        assert(id, "webhooks.tsv: " .. line)
        local w = r.webhooks[id] or { attempts = 0, results = {} }
        r.webhooks[id] = w
        w.attempts = math.max(w.attempts, tonumber(attempt))
        w.results[#w.results + 1] = outcome .. ":" .. result
        if outcome:match("^2") and not w.acked then w.acked = true; r.acked[#r.acked + 1] = id end
    end
    for line in (server.read_file(dir .. "/latency.tsv") or ""):gmatch("[^\n]+") do
        local kind, n, p50, p99, max = line:match("^(%a+)\t(%d+)\t([%d.]+)\t([%d.]+)\t([%d.]+)")
        if kind then r.latency[kind] = { n = tonumber(n), p50 = tonumber(p50), p99 = tonumber(p99),
            max = tonumber(max) } end
    end
    return r
end

-- Counts of outcomes, optionally for one kind and a window [from, to) of seconds.
function M.outcomes(r, kind, from, to)
    local c = {}
    for _, e in ipairs(r.timeline) do
        if (not kind or e.kind == kind) and e.sec >= (from or 0) and e.sec < (to or math.huge) then
            c[e.outcome] = (c[e.outcome] or 0) + e.n
        end
    end
    return c
end

-- 2xx answers per second over a window, all kinds (or one).
function M.rate(r, from, to, kind)
    local ok = 0
    for outcome, n in pairs(M.outcomes(r, kind, from, to)) do
        if outcome:match("^2") then ok = ok + n end
    end
    return ok / math.max(1, to - from)
end

-- The failures (anything not 2xx) by "kind outcome", over a window.
function M.failures(r, from, to)
    local f, total = {}, 0
    for _, e in ipairs(r.timeline) do
        if not e.outcome:match("^2") and e.sec >= (from or 0) and e.sec < (to or math.huge) then
            local key = e.kind .. " " .. e.outcome
            f[key] = (f[key] or 0) + e.n
            total = total + e.n
        end
    end
    return f, total
end

-- Whole seconds from `from` until the end of the last second with a failure
-- (0 when none after it).
function M.recovery(r, from)
    local last = nil
    for _, e in ipairs(r.timeline) do
        if not e.outcome:match("^2") and (not last or e.sec > last) then last = e.sec end
    end
    if not last then return 0 end
    return math.max(0, math.ceil(last + 1 - from))
end

function M.describe(counts)
    local keys = {}
    for k in pairs(counts) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. counts[k] end
    return #parts > 0 and table.concat(parts, ", ") or "none"
end

-- Stored copies of the given payload ids over every church's database:
-- { id -> count }, and the ids stored that are not in the list (by prefix).
function Bench:stored(tag)
    local counts = {}
    for _, c in ipairs(self.churches) do
        local out, ok = c.cluster:psql(c.db, "SELECT provider_message_id, count(*) FROM messages " ..
            "WHERE provider_message_id LIKE 'fault-" .. tag .. "-%' GROUP BY 1")
        if not ok then return nil, out end
        for id, n in out:gmatch("([^|\n]+)|(%d+)") do counts[id] = (counts[id] or 0) + tonumber(n) end
    end
    return counts
end

-- Waits until every acknowledged webhook of the run is stored; returns
-- { acked, stored, missing, doubled, settle_s }.
function Bench:settled(gen, timeout)
    local t0 = socket.gettime()
    local s
    server.wait_until(function()
        local counts = self:stored(gen.tag)
        if not counts then return false end
        s = { acked = #gen.result.acked, stored = 0, missing = 0, doubled = 0, counts = counts }
        for _, n in pairs(counts) do
            s.stored = s.stored + 1
            if n > 1 then s.doubled = s.doubled + 1 end
        end
        for _, id in ipairs(gen.result.acked) do
            if not counts[id] then s.missing = s.missing + 1 end
        end
        return s.missing == 0
    end, timeout or 60)
    s = s or { acked = #gen.result.acked, stored = 0, missing = #gen.result.acked, doubled = 0, counts = {} }
    s.settle_s = socket.gettime() - t0
    -- every stored id was sent by this run
    s.unknown = 0
    for id in pairs(s.counts) do
        if not gen.result.webhooks[id] then s.unknown = s.unknown + 1 end
    end
    return s
end

-- Recovery ---------------------------------------------------------------------

-- How busy the machine is: the 1-minute load average per core, at least 1.
local function busy_factor()
    local loadavg = tonumber((server.read_file("/proc/loadavg") or ""):match("^([%d.]+)")) or 0
    local cores = tonumber(server.capture("nproc"):match("%d+")) or 1
    return math.max(1, loadavg / cores), loadavg, cores
end

-- The recovery the contract promises: a server that failed breaker_failures
-- connects is not tried for breaker_open_s, then a probe connects (within
-- the connect timeout); plus a margin of 5 s that grows with how busy the
-- machine is (and with $STEEPLE_SPEC_SLOW). Returns seconds and a text
-- that says how they were made.
function M.recovery_bound()
    local factor, loadavg, cores = busy_factor()
    local base = M.BREAKER.open_s + M.BREAKER.connect_timeout_ms / 1000
    local margin = 5 * factor * server.SLOW
    return base + margin, string.format("%.0f s (breaker_open_s %d + connect timeout %.0f s + margin %.0f s: "
        .. "load average %.1f on %d cores)", base + margin, M.BREAKER.open_s, M.BREAKER.connect_timeout_ms / 1000,
        margin, loadavg, cores)
end

local function answers(srv, method, path, token, body)
    local res = http.request { port = srv.port, method = method, path = path, body = body, timeout = 5,
        headers = { Authorization = token and ("Bearer " .. token) or nil,
                    ["Content-Type"] = body and "application/json" or nil } }
    return res ~= nil and res.status == 200
end

-- True when /ready, every church's conversations and a login on each tenant
-- server answer 200 (so the registry and both tenant servers serve).
local function serving(self, srv)
    if not answers(srv, "GET", "/ready") then return false end
    local logged_in = {}
    for _, c in ipairs(self.churches) do
        if not answers(srv, "GET", "/api/conversations?limit=1", c.token) then return false end
        if not logged_in[c.cluster] then
            local body = string.format('{"email":"%s","password":"%s"}', c.email, c.password)
            if not answers(srv, "POST", "/api/auth/login", nil, body) then return false end
            logged_in[c.cluster] = true
        end
    end
    return true
end

-- Waits until the server serves every kind again, or the deadline (unix
-- seconds) passes; asks at least once. Returns true or false.
function Bench:serves(srv, deadline)
    while true do
        if serving(self, srv) then return true end
        if socket.gettime() >= deadline then return false end
        socket.sleep(0.2)
    end
end

-- The results table -------------------------------------------------------------

local rows, notes = {}, {}

local function write()
    local lines = { "| fault | requests answered 2xx / all | failures by kind | webhooks acked → stored once |" ..
        " recovery | throughput vs no fault |", "|---|---|---|---|---|---|" }
    for _, r in ipairs(rows) do
        lines[#lines + 1] = string.format("| %s | %s | %s | %s | %s | %s |", r.name, r.answered, r.failures,
            r.webhooks, r.recovery, r.ratio)
    end
    if #notes > 0 then lines[#lines + 1] = "" end
    for _, n in ipairs(notes) do lines[#lines + 1] = "- " .. n end
    server.write_file(M.OUT .. "/results.md", table.concat(lines, "\n") .. "\n")
end

-- row: { answered, failures (text), webhooks (text), recovery_s, ratio }
function M.record(name, row)
    row.name = name
    rows[#rows + 1] = row
    write()
end

-- A line under the table: what a case saw that the suite reports without
-- failing on it (a recovery slower than usual, a low baseline, ...).
function M.note(text)
    notes[#notes + 1] = text
    write()
end

return M
