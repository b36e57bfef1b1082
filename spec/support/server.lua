-- Starts and controls the real steeple binary for the integration specs.
--
--   local server = require "support.server"
--   local srv = server.start{ config = { workers = 1 }, env = { ... }, watch = true }
--   srv.port, srv.pid, srv.scripts (a private copy of lua/ with the test routes)
--   srv:sighup(), srv:signal("KILL", pid), srv:worker_pids()
--   srv:kill([timeout]): SIGKILL to the master and its workers, waits until they are gone
--   server.launch(command, log, pid_file, rc_file, what) -> pid: a process in the background
--   server.alive(pid): the process runs (exists and is no zombie)
--   srv:log_text(), srv:log_contains(pattern), srv:wait_log(pattern, timeout)
--   srv:entries{ field = value }, srv:wait_entry{ ... }: decoded JSON log lines
--   srv:mark(); ...; srv:unexpected_errors(allowed_patterns) -> error lines since the mark
--   srv:stop() -> exited_in_time, exit_status (srv.exited_early is set when the
--       server had already exited without being asked to); only the first
--       call stops it, a later one returns the first one's answer
--   srv:metric('name{labels}') -> the value in /metrics
--   server.run_binary(args, env, timeout) -> status, stderr, stdout
--   server.SLOW, server.slow(t): $STEEPLE_SPEC_SLOW (default 1), how many times
--       slower the server runs than usual (make valgrind-test sets it); the
--       waits for something to happen (wait_until, wait_ready, wait_log*,
--       wait_entr*), the default read and request timeouts, the client's
--       default timeout and the server's spool.after_ms and telnyx.timeout_ms
--       are stretched by it; a wait for something NOT to happen is not.
--   server.capture(cmd) -> a shell command's output; server.wait_until(fn, timeout)
--   server.cleanup() stops what is still running and removes the temporary
--       directories (kept when STEEPLE_SPEC_KEEP is set).
--
-- The binary is $STEEPLE_BIN (absolute), default build/steeple in the repository;
-- it runs with the repository root as its working directory.
local socket = require "socket"
local cjson = require "cjson.safe"
local http = require "support.http"

local M = {}

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = shell_quote

local function run(cmd)
    local ok, how, code = os.execute(cmd)
    if how == "exit" then return code end
    return ok and 0 or 128 + (code or 0)
end

local function capture(cmd)
    local p = assert(io.popen(cmd, "r"))
    local out = p:read("a")
    p:close()
    return out
end
M.capture = capture

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end
M.read_file = read_file

local function write_file(path, text)
    local f = assert(io.open(path, "wb"))
    assert(f:write(text))
    assert(f:close())
end
M.write_file = write_file

-- The repository root: two levels above this file.
local function repo_root()
    local src = debug.getinfo(1, "S").source:sub(2)
    local dir = src:match("^(.*)/spec/support/[^/]*$") or "."
    if dir:sub(1, 1) ~= "/" then
        local cwd = capture("pwd"):gsub("%s+$", "")
        dir = dir == "." and cwd or cwd .. "/" .. dir
    end
    return dir
end

M.ROOT = repo_root()
M.BIN = os.getenv("STEEPLE_BIN") or (M.ROOT .. "/build/steeple")
if M.BIN:sub(1, 1) ~= "/" then M.BIN = M.ROOT .. "/" .. M.BIN end
M.FIXTURES = M.ROOT .. "/spec/integration/fixtures"

local now = socket.gettime
M.now = now

M.SLOW = tonumber(os.getenv("STEEPLE_SPEC_SLOW") or "") or 1
function M.slow(t)
    local v = t * M.SLOW
    return math.tointeger(v) or v -- integer config values stay integers
end

-- Polls fn every 0.2 s until it returns true or timeout seconds pass;
-- returns fn's last answer.
function M.wait_until(fn, timeout)
    local deadline = now() + timeout * M.SLOW
    while now() < deadline do
        if fn() then return true end
        socket.sleep(0.2)
    end
    return fn()
end

-- Temporary directories -------------------------------------------------------

local tmpdirs = {}

function M.tmpdir()
    local dir = capture("mktemp -d /tmp/steeple-spec.XXXXXX"):gsub("%s+$", "")
    assert(dir ~= "", "mktemp failed")
    tmpdirs[#tmpdirs + 1] = dir
    return dir
end

-- With STEEPLE_SPEC_LOGS set (spec/run.sh), every server's log is copied
-- there before its directory goes, for the suite-wide log checks (spec 99).
local function keep_log(srv)
    local dir = os.getenv("STEEPLE_SPEC_LOGS")
    if dir == nil or srv.log_kept then return end
    srv.log_kept = true
    local text = read_file(srv.log_path)
    if text then write_file(string.format("%s/%d-%d.log", dir, srv.port, srv.pid or 0), text) end
end

function M.cleanup()
    for _, server in ipairs(M.running or {}) do
        if server:alive() then server:stop(2) end
        keep_log(server)
    end
    -- STEEPLE_SPEC_KEEP=1 keeps the logs and scripts for a post-mortem.
    if os.getenv("STEEPLE_SPEC_KEEP") then
        tmpdirs = {}
        return
    end
    for _, dir in ipairs(tmpdirs) do
        if dir:match("^/tmp/steeple%-spec%.") then run("rm -rf " .. shell_quote(dir)) end
    end
    tmpdirs = {}
end

-- The fixture route files: fixtures/test_routes.lua as "test", then every
-- other fixtures/test_<name>_routes.lua as "test_<name>", sorted by name.
function M.fixture_routes()
    local out = { { name = "test", path = M.FIXTURES .. "/test_routes.lua" } }
    local listing = capture("ls -1 " .. shell_quote(M.FIXTURES) .. " 2>/dev/null")
    local names = {}
    for file in listing:gmatch("[^\n]+") do
        local name = file:match("^(test_[%w_]-)_routes%.lua$")
        if name then names[#names + 1] = name end
    end
    table.sort(names)
    for _, name in ipairs(names) do
        out[#out + 1] = { name = name, path = M.FIXTURES .. "/" .. name .. "_routes.lua" }
    end
    return out
end

-- Returns a new scripts directory: the repository's lua/ tree plus the test
-- routes of fixture_routes() (routes/test.lua, routes/test_db.lua, ...),
-- registered after "ops".
function M.scripts_dir()
    local dir = M.tmpdir() .. "/lua"
    assert(run(string.format("cp -R %s %s", shell_quote(M.ROOT .. "/lua"), shell_quote(dir))) == 0,
        "cannot copy the lua/ tree")
    local modules = {}
    for _, name in ipairs(dofile(M.ROOT .. "/lua/routes/init.lua")) do
        modules[#modules + 1] = string.format("%q", name)
    end
    for _, fixture in ipairs(M.fixture_routes()) do
        local routes = assert(read_file(fixture.path), "missing fixture " .. fixture.path)
        write_file(dir .. "/routes/" .. fixture.name .. ".lua", routes)
        modules[#modules + 1] = string.format("%q", fixture.name)
    end
    write_file(dir .. "/routes/init.lua", "return { " .. table.concat(modules, ", ") .. " }\n")
    return dir
end

-- Returns a TCP port that was free a moment ago.
function M.free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

-- Config files ----------------------------------------------------------------

local function serialize(v, indent)
    local t = type(v)
    if t == "string" then
        return string.format("%q", v)
    elseif t == "number" then
        if math.type(v) == "integer" then return tostring(v) end
        return string.format("%.17g", v)
    elseif t == "boolean" then
        return tostring(v)
    elseif t == "table" then
        indent = indent or ""
        local inner = indent .. "    "
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = k end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        local parts = {}
        for _, k in ipairs(keys) do
            local key = type(k) == "string" and string.format("[%q]", k) or "[" .. serialize(k) .. "]"
            parts[#parts + 1] = inner .. key .. " = " .. serialize(v[k], inner) .. ",\n"
        end
        return "{\n" .. table.concat(parts) .. indent .. "}"
    end
    error("cannot write a " .. t .. " to a config file")
end

-- Writes "return <tbl>" to a new file (in dir, or a new temp dir); returns its path.
function M.write_config(tbl, dir)
    local path = (dir or M.tmpdir()) .. "/config.lua"
    write_file(path, "return " .. serialize(tbl) .. "\n")
    return path
end

local function merge(into, from)
    for k, v in pairs(from) do
        if type(v) == "table" and type(into[k]) == "table" then
            merge(into[k], v)
        else
            into[k] = v
        end
    end
    return into
end

-- The settings every spec starts from: few workers and short timeouts.
function M.default_config()
    return {
        workers = 1,
        shutdown_timeout_s = 5,
        log = { level = "info" },
        limits = { read_timeout_s = 2 * M.SLOW, request_timeout_s = 2 * M.SLOW },
        -- the registry connections of the janitor, the outbound sweep and
        -- the broadcast dispatcher would change the connection counts many
        -- specs assert; the specs of those turn them on
        tenants = { janitor_interval_s = 0 },
        telnyx = { sweep_interval_s = 0 },
        messaging = { dispatch_interval_s = 0 },
    }
end

-- Variables the runner's environment must not leak into the server.
local CLEARED_ENV = { "PORT", "STEEPLE_LISTEN", "STEEPLE_WORKERS", "STEEPLE_ENV" }

-- Returns the shell command that runs the binary with the given arguments and
-- environment (a table; false removes a variable).
-- Fixed keys for the specs (a spec may override them or remove them with
-- false), and no rate limit on /api/auth/* unless a spec sets one.
local DEFAULT_ENV = {
    STEEPLE_JWT_SECRET = "spec-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    STEEPLE_DATA_KEY = "c3BlYy1kYXRhLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE=",
    STEEPLE_AUTH_RATE_PER_MIN = "0",
}
M.DEFAULT_ENV = DEFAULT_ENV

function M.command(args, env)
    local parts = { "env" }
    for _, name in ipairs(CLEARED_ENV) do parts[#parts + 1] = "-u " .. name end
    local merged = {}
    for k, v in pairs(DEFAULT_ENV) do merged[k] = v end
    for k, v in pairs(env or {}) do merged[k] = v end
    env = merged
    local names = {}
    for k in pairs(env) do names[#names + 1] = k end
    table.sort(names)
    -- env takes its -u options before the first assignment
    for _, k in ipairs(names) do
        if env[k] == false then parts[#parts + 1] = "-u " .. k end
    end
    for _, k in ipairs(names) do
        if env[k] ~= false then parts[#parts + 1] = k .. "=" .. shell_quote(env[k]) end
    end
    parts[#parts + 1] = shell_quote(M.BIN)
    for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
    return table.concat(parts, " ")
end

-- Runs the binary to completion (bounded by timeout seconds) in the repository
-- root. Returns exit status, stderr text, stdout text.
function M.run_binary(args, env, timeout)
    local dir = M.tmpdir()
    local cmd = string.format("cd %s && timeout -s KILL %d %s >%s 2>%s </dev/null",
        shell_quote(M.ROOT), timeout or 10, M.command(args, env),
        shell_quote(dir .. "/stdout"), shell_quote(dir .. "/stderr"))
    local status = run(cmd)
    return status, read_file(dir .. "/stderr") or "", read_file(dir .. "/stdout") or ""
end

-- Servers -----------------------------------------------------------------------

local Server = {}
Server.__index = Server

M.running = {}

-- Whether process pid runs: it exists and is no zombie (a killed worker
-- whose master died first waits to be reaped by init, which in a container
-- may never come).
local function process_alive(pid)
    local stat = read_file("/proc/" .. pid .. "/stat")
    if stat == nil then return false end
    return stat:match("^%d+ %b() (%a)") ~= "Z"
end
M.alive = process_alive

local function log_tail(text, n)
    local lines = {}
    for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
    return table.concat(lines, "\n", math.max(1, #lines - (n or 30) + 1))
end

-- Runs command (a shell command line) in the background from the
-- repository's root, its output to log_path; a wrapper shell waits for it,
-- its pid in pid_path and, once it has exited, its exit status in rc_path.
-- Returns the pid once it is known (5 s at most; `what` names the process
-- in the error).
function M.launch(command, log_path, pid_path, rc_path, what)
    local script = string.format(
        "cd %s || exit 1; %s >%s 2>&1 </dev/null & echo $! >%s; wait $!; echo $? >%s",
        shell_quote(M.ROOT), command, shell_quote(log_path), shell_quote(pid_path), shell_quote(rc_path))
    assert(run("sh -c " .. shell_quote(script) .. " >/dev/null 2>&1 </dev/null &") == 0)
    local deadline = now() + 5
    while true do
        local s = read_file(pid_path)
        if s and s:match("%d+\n") then return tonumber(s:match("%d+")) end
        assert(now() < deadline, what .. "'s pid never appeared")
        socket.sleep(0.01)
    end
end

-- Starts the server and waits until GET /health answers.
-- opts: config (merged over default_config()), env, scripts (dir), watch,
--       port (default: a free one, passed as PORT), timeout (default 10 s).
function M.start(opts)
    opts = opts or {}
    local self = setmetatable({}, Server)
    self.dir = M.tmpdir()
    self.scripts = opts.scripts or M.scripts_dir()
    self.port = opts.port or M.free_port()
    self.config = merge(M.default_config(), opts.config or {})
    if M.SLOW ~= 1 then
        local spool, telnyx = self.config.spool or {}, self.config.telnyx or {}
        spool.after_ms = math.min(60000, math.floor((spool.after_ms or 1000) * M.SLOW))
        telnyx.timeout_ms = math.min(120000, math.floor((telnyx.timeout_ms or 10000) * M.SLOW))
        self.config.spool, self.config.telnyx = spool, telnyx
    end
    self.config_path = M.write_config(self.config, self.dir)
    self.log_path = self.dir .. "/server.log"
    self.pid_path = self.dir .. "/pid"
    self.rc_path = self.dir .. "/rc"
    self.mark_offset = 0
    -- each server its own spool: a spool directory is locked by its server
    local env = { PORT = tostring(self.port), STEEPLE_SPOOL_DIR = self.dir .. "/spool" }
    for k, v in pairs(opts.env or {}) do env[k] = v end
    local args = { "serve", "--config", self.config_path, "--scripts", self.scripts }
    if opts.watch then args[#args + 1] = "--watch" end
    self.pid = M.launch(M.command(args, env), self.log_path, self.pid_path, self.rc_path, "the server")
    M.running[#M.running + 1] = self
    if opts.wait ~= false then
        local ok, err = self:wait_ready(opts.timeout or 10)
        if not ok then
            self:stop(2)
            error(err .. "\n--- server log ---\n" .. log_tail(self:log_text()), 2)
        end
    end
    return self
end

-- Waits until /health answers 200. Returns true or nil, message.
function Server:wait_ready(timeout)
    local deadline = now() + timeout * M.SLOW
    while now() < deadline do
        if self:exit_status() then
            return nil, "the server exited with status " .. self:exit_status() .. " during start-up"
        end
        local res = http.request { port = self.port, path = "/health", timeout = 1 }
        if res and res.status == 200 then return true end
        socket.sleep(0.05)
    end
    return nil, string.format("GET /health did not answer within %g s", timeout)
end

-- The master's exit status once it has exited, else nil.
function Server:exit_status()
    local s = read_file(self.rc_path)
    if s and s:match("%d+") then return tonumber(s:match("%d+")) end
    return nil
end

function Server:alive()
    return self:exit_status() == nil and process_alive(self.pid)
end

function Server:signal(name, pid)
    local stops = name == "TERM" or name == "INT" or name == "QUIT" or name == "KILL"
    if stops and (pid == nil or pid == self.pid) then self.signalled = true end
    return run(string.format("kill -%s %d 2>/dev/null", name, pid or self.pid)) == 0
end

function Server:sighup()
    return self:signal("HUP")
end

-- Waits up to timeout seconds for the master to exit. Returns its exit status or nil.
function Server:wait_exit(timeout)
    local deadline = now() + timeout
    while true do
        local status = self:exit_status()
        if status then return status end
        if now() >= deadline then return nil end
        socket.sleep(0.02)
    end
end

-- Sends SIGTERM and waits up to timeout (default 10 s); then SIGKILLs the
-- master and its workers. Returns whether it exited in time, and its status.
-- Only the first call stops the server: a later one (a spec's own stop, then
-- its suite's teardown) signals nothing and returns what the first returned.
function Server:stop(timeout)
    if self.stopped then return self.stopped[1], self.stopped[2] end
    local in_time, status = true, self:exit_status()
    if status then
        if not self.signalled then
            -- Nobody here asked it to stop: a crash or a signal from elsewhere.
            self.exited_early = "the server had exited with status " .. status .. " before it was stopped\n"
                .. log_tail(self:log_text(), 10)
        end
    else
        local workers = self:worker_pids()
        self:signal("TERM")
        status = self:wait_exit(timeout or 10)
        if not status then
            self:signal("KILL")
            for _, pid in ipairs(workers) do self:signal("KILL", pid) end
            in_time, status = false, self:wait_exit(5)
        end
    end
    self.stopped = { in_time, status }
    return in_time, status
end

-- Kills the master and its workers at once with SIGKILL, in one kill(1)
-- (no shutdown: a crash or a lost host; no worker outlives the master), and
-- waits until they are gone: the master for `timeout` seconds (default 5),
-- the workers for 5. Returns the master's exit status as its wrapper saw it
-- (137).
function Server:kill(timeout)
    local workers = self:worker_pids()
    self.signalled = true
    run("kill -KILL " .. self.pid .. " " .. table.concat(workers, " ") .. " 2>/dev/null")
    local status = self:wait_exit(timeout or 5)
    assert(status, "the master outlived SIGKILL")
    assert(M.wait_until(function()
        for _, pid in ipairs(workers) do
            if process_alive(pid) then return false end
        end
        return true
    end, 5), "a worker outlived SIGKILL")
    return status
end

-- The pids of the master's children (the workers), sorted.
function Server:worker_pids()
    local pids = {}
    for pid in capture("pgrep -P " .. self.pid .. " 2>/dev/null"):gmatch("%d+") do
        pids[#pids + 1] = tonumber(pid)
    end
    table.sort(pids)
    return pids
end

-- Logs ------------------------------------------------------------------------

function Server:log_text()
    return read_file(self.log_path) or ""
end

-- The complete lines of the log (from byte offset `from`, default 1), decoded
-- where they are JSON: { { text =, entry = table|nil }, ... }.
function Server:log_lines(from)
    local text = self:log_text()
    local out = {}
    local pos = from or 1
    while true do
        local i = text:find("\n", pos, true)
        if not i then break end
        local line = text:sub(pos, i - 1)
        local entry = line:sub(1, 1) == "{" and cjson.decode(line) or nil
        out[#out + 1] = { text = line, entry = type(entry) == "table" and entry or nil, finish = i }
        pos = i + 1
    end
    return out, pos
end

-- The first log line matching the Lua pattern, or nil.
function Server:log_contains(pattern)
    for _, line in ipairs(self:log_lines()) do
        if line.text:find(pattern) then return line.text end
    end
    return nil
end

-- The number of log lines matching the pattern.
function Server:log_count(pattern)
    local n = 0
    for _, line in ipairs(self:log_lines()) do
        if line.text:find(pattern) then n = n + 1 end
    end
    return n
end

-- Waits (default 5 s) for a log line matching the pattern; returns it or nil.
function Server:wait_log(pattern, timeout)
    local deadline = now() + (timeout or 5) * M.SLOW
    while true do
        local line = self:log_contains(pattern)
        if line then return line end
        if now() >= deadline then return nil end
        socket.sleep(0.02)
    end
end

-- Waits (default 5 s) until at least n lines match; returns the count.
function Server:wait_log_count(pattern, n, timeout)
    local deadline = now() + (timeout or 5) * M.SLOW
    while true do
        local count = self:log_count(pattern)
        if count >= n or now() >= deadline then return count end
        socket.sleep(0.02)
    end
end

-- The decoded JSON log entries whose fields equal every value in match.
function Server:entries(match)
    local out = {}
    for _, line in ipairs(self:log_lines()) do
        local e = line.entry
        if e then
            local ok = true
            for k, v in pairs(match or {}) do
                if e[k] ~= v then
                    ok = false
                    break
                end
            end
            if ok then out[#out + 1] = e end
        end
    end
    return out
end

-- Waits (default 5 s) until at least n (default 1) entries match; returns them.
function Server:wait_entries(match, n, timeout)
    local deadline = now() + (timeout or 5) * M.SLOW
    while true do
        local found = self:entries(match)
        if #found >= (n or 1) or now() >= deadline then return found end
        socket.sleep(0.02)
    end
end

-- Waits for one entry matching; returns it or nil.
function Server:wait_entry(match, timeout)
    return self:wait_entries(match, 1, timeout)[1]
end

-- Makes unexpected_errors look only at lines written from now on.
function Server:mark()
    local _, pos = self:log_lines()
    self.mark_offset = pos
end

local ERROR_LEVELS = { error = true, alert = true, crit = true, fatal = true }

-- Returns the error/alert lines written since the last mark (or check) that
-- match none of the allowed Lua patterns, and moves the mark past them.
-- Sanitizer reports and other non-JSON lines that look like crashes count too.
function Server:unexpected_errors(allowed)
    local lines, pos = self:log_lines(self.mark_offset)
    self.mark_offset = pos
    local out = {}
    for _, line in ipairs(lines) do
        local bad
        if line.entry then
            bad = ERROR_LEVELS[tostring(line.entry.level)]
        else
            bad = line.text:find("Sanitizer") or line.text:find("runtime error")
                or line.text:find("ERROR") or line.text:find("[Ss]egmentation")
        end
        if bad then
            for _, pattern in ipairs(allowed or {}) do
                if line.text:find(pattern) then
                    bad = false
                    break
                end
            end
        end
        if bad then out[#out + 1] = line.text end
    end
    return out
end

-- Metrics ---------------------------------------------------------------------

-- Returns the /metrics text as { ["name{labels}"] = value }.
function Server:metrics()
    local res = assert(http.request { port = self.port, path = "/metrics" })
    assert(res.status == 200, "GET /metrics answered " .. res.status)
    local values = {}
    for line in res.body:gmatch("[^\n]+") do
        if line:sub(1, 1) ~= "#" then
            local key, value = line:match("^(%S+)%s+(%S+)")
            if key then values[key] = tonumber(value) end
        end
    end
    return values, res
end

-- The last case of every spec file: SIGTERM stops the server in time with
-- status 0, and it logged no error line since the last mark.
function Server:assert_stops_cleanly()
    local check = require "luassert" -- specs get it as `assert`; modules do not
    local in_time, status = self:stop(10)
    check.is_nil(self.exited_early)
    check.is_true(in_time)
    check.equal(0, status)
    check.same({}, self:unexpected_errors())
end

-- The value of one series, e.g. srv:metric('steeple_script_reloads_total{result="ok"}'); 0 when absent.
function Server:metric(key)
    return self:metrics()[key] or 0
end

return M
