-- A private PgBouncer in front of the test cluster, for the specs: its own
-- ini and userlist in a temporary directory, a free port on 127.0.0.1,
-- transaction pooling, and every database of the cluster behind it
-- (`* = host=... port=...`). Never the system's pgbouncer service.
--
--   local bouncer = pgbouncer.start { target = pg.BASE_URL [, pool_mode = "transaction"] }
--   bouncer.port, bouncer.dir, bouncer.log_path
--   bouncer:url(dbname)      the URL of a database through it
--   bouncer:stop()           stops it (SIGINT: at once), waits for its exit
--   bouncer:start()          starts it again on the same port
--   bouncer:log_text()
local server = require "support.server"

local M = {}

local BIN <const> = "/usr/sbin/pgbouncer"

local Bouncer = {}
Bouncer.__index = Bouncer

-- The test cluster trusts local TCP connections, so PgBouncer does too:
-- its userlist only names the role.
local function ini(b)
    return table.concat({
        "[databases]",
        string.format("* = host=%s port=%d", b.pg_host, b.pg_port),
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        "listen_port = " .. b.port,
        "unix_socket_dir =",
        "auth_type = trust",
        "auth_file = " .. b.dir .. "/userlist.txt",
        "pool_mode = " .. b.pool_mode,
        "max_client_conn = 200",
        "default_pool_size = 10",
        -- steeple sends its statement timeout as `options` (-c statement_timeout=...)
        "ignore_startup_parameters = extra_float_digits,options",
        "logfile = " .. b.log_path,
        "pidfile = " .. b.dir .. "/pgbouncer.pid",
        "log_connections = 0",
        "log_disconnections = 0",
        "",
    }, "\n")
end

local function run(cmd)
    local ok = os.execute(cmd)
    return ok == true or ok == 0
end

local function pid_of(b)
    local text = server.read_file(b.dir .. "/pgbouncer.pid")
    return text and tonumber(text:match("%d+"))
end

local function alive(pid)
    return pid ~= nil and run("kill -0 " .. pid .. " 2>/dev/null")
end

-- Starts it (daemonised, -d) and waits until it accepts connections.
function Bouncer:start()
    -- PgBouncer refuses to run as root: then it runs as postgres, which must
    -- read its files and write its log
    local as = ""
    if server.capture("id -u"):match("^0%s") then
        as = " -u postgres"
        assert(run("chown -R postgres " .. server.quote(self.dir)), "cannot chown " .. self.dir)
    end
    assert(run(BIN .. " -d -q" .. as .. " " .. server.quote(self.dir .. "/pgbouncer.ini")),
        "pgbouncer did not start:\n" .. self:log_text())
    local ok = server.wait_until(function()
        return run("psql " .. server.quote(self:url("postgres")) .. " -XAtqc 'SELECT 1' >/dev/null 2>&1")
    end, 10)
    assert(ok, "pgbouncer does not answer:\n" .. self:log_text())
end

-- Stops it at once (SIGINT) and waits until it has exited.
function Bouncer:stop()
    local pid = pid_of(self)
    if not alive(pid) then return end
    run("kill -INT " .. pid)
    assert(server.wait_until(function() return not alive(pid) end, 10), "pgbouncer did not stop")
end

function Bouncer:url(dbname)
    return string.format("postgresql://%s@127.0.0.1:%d/%s", self.user, self.port, dbname)
end

function Bouncer:log_text()
    return server.read_file(self.log_path) or ""
end

-- opts.target: the URL of the PostgreSQL it fronts (host and port are used);
-- opts.pool_mode: "transaction" by default.
function M.start(opts)
    local target = assert(opts.target, "pgbouncer.start needs a target URL")
    local user, host, port = target:match("^postgres[a-z]*://([^@/:]+)@([^:/]+):(%d+)/")
    assert(user, "the target must be a TCP URL with a user: " .. target)
    local b = setmetatable({ user = user, pg_host = host, pg_port = tonumber(port),
        pool_mode = opts.pool_mode or "transaction", port = server.free_port(),
        dir = server.tmpdir() }, Bouncer)
    b.log_path = b.dir .. "/pgbouncer.log"
    server.write_file(b.dir .. "/userlist.txt", string.format('"%s" ""\n', user))
    server.write_file(b.dir .. "/pgbouncer.ini", ini(b))
    b:start()
    return b
end

return M
