-- A private HAProxy (Debian's, /usr/sbin/haproxy; never its system service)
-- in front of steeple nodes, for the specs: its configuration in a temporary
-- directory, a free port on 127.0.0.1, run in the foreground in the
-- background with its log (one line per request, health-check changes) in
-- that directory.
--
--   local lb = haproxy.start { nodes = { { name = "a", port = 8001 }, ... } }
--   lb.port                  where clients connect
--   lb:stats()               -> { ["backend/server"] = { status =, wretr =, wredis =, ... } }
--                               (the columns of HAProxy's CSV statistics)
--   lb:wait_status(node, status [, timeout])   until node's check says "UP" / "DOWN"
--   lb:log_text(), lb.log_path
--   lb:stop()                stops it (SIGUSR1: once its connections end; then SIGKILL)
--
-- Routing. Two backends hold the same nodes, balanced round robin:
--   * `webhooks` (/api/webhooks/...) retries a request on another node
--     (`retry-on conn-failure empty-response`, `option redispatch 1`) when
--     the node refused the connection or closed it without answering: a
--     provider's webhook carries its event's id and is stored once however
--     often it comes, so sending it again is safe;
--   * `api` (everything else) retries only requests never sent
--     (conn-failure): a registration or a refresh must not run twice.
-- Each node is checked with GET /ready every CHECK_MS (2 failures: DOWN, 2
-- successes: UP); the webhooks backend follows the api backend's checks.
local server = require "support.server"
local http = require "support.http"

local M = {}

local BIN <const> = "/usr/sbin/haproxy"
local CHECK_MS <const> = 250

local Balancer = {}
Balancer.__index = Balancer

local function config(lb)
    local lines = {
        "global",
        "    maxconn 1024",
        "    log stdout format raw local0",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option log-health-checks",
        "    timeout connect 1s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    retries 3",
        "    option redispatch 1",
        "    default-server inter " .. CHECK_MS .. "ms fall 2 rise 2",
        "",
        "frontend clients",
        "    bind 127.0.0.1:" .. lb.port,
        "    use_backend webhooks if { path_beg /api/webhooks/ }",
        "    default_backend api",
        "",
        "backend api",
        "    balance roundrobin",
        "    retry-on conn-failure",
        "    option httpchk",
        "    http-check send meth GET uri /ready",
        "    http-check expect status 200",
    }
    for _, node in ipairs(lb.nodes) do
        lines[#lines + 1] = string.format("    server %s 127.0.0.1:%d check", node.name, node.port)
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = "backend webhooks"
    lines[#lines + 1] = "    balance roundrobin"
    lines[#lines + 1] = "    retry-on conn-failure empty-response"
    for _, node in ipairs(lb.nodes) do
        lines[#lines + 1] = string.format("    server %s 127.0.0.1:%d track api/%s", node.name, node.port, node.name)
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = "listen stats"
    lines[#lines + 1] = "    bind 127.0.0.1:" .. lb.stats_port
    lines[#lines + 1] = "    stats enable"
    lines[#lines + 1] = "    stats uri /stats"
    lines[#lines + 1] = ""
    return table.concat(lines, "\n")
end

local function run(cmd)
    local ok = os.execute(cmd)
    return ok == true or ok == 0
end

function Balancer:log_text()
    return server.read_file(self.log_path) or ""
end

function Balancer:exited()
    local rc = server.read_file(self.dir .. "/rc")
    return rc ~= nil and rc:match("%d+") ~= nil
end

-- The statistics as { ["backend/server"] = { column = value } } (numbers
-- where the column holds one), or nil, error.
function Balancer:stats()
    local res, err = http.request { port = self.stats_port, path = "/stats;csv", timeout = 5 }
    if not res then return nil, err end
    if res.status ~= 200 then return nil, "stats answered " .. res.status end
    local columns, out = nil, {}
    for line in res.body:gmatch("[^\n]+") do
        local cells = {}
        for cell in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = cell end
        if columns == nil then
            cells[1] = cells[1]:gsub("^#%s*", "")
            columns = cells
        else
            local row = {}
            for i, name in ipairs(columns) do
                if name ~= "" then row[name] = tonumber(cells[i]) or cells[i] end
            end
            out[row.pxname .. "/" .. row.svname] = row
        end
    end
    return out
end

-- Waits (default 10 s) until node's check in the api backend reads status
-- ("UP", "DOWN"); returns true or false.
function Balancer:wait_status(node, status, timeout)
    return server.wait_until(function()
        local stats = self:stats()
        local row = stats and stats["api/" .. node]
        return row ~= nil and tostring(row.status):match("^" .. status) ~= nil
    end, timeout or 10)
end

function Balancer:stop()
    if self.stopped then return end
    self.stopped = true
    local pid = self.pid
    if pid and server.alive(pid) then
        run("kill -USR1 " .. pid)
        if not server.wait_until(function() return not server.alive(pid) end, 5) then
            run("kill -KILL " .. pid)
        end
    end
end

-- opts.nodes: { { name =, port = }, ... }, the steeple nodes it balances.
function M.start(opts)
    assert(opts.nodes and #opts.nodes > 0, "haproxy.start needs nodes")
    local lb = setmetatable({ nodes = opts.nodes, port = server.free_port(), stats_port = server.free_port(),
        dir = server.tmpdir() }, Balancer)
    lb.log_path = lb.dir .. "/haproxy.log"
    local cfg = lb.dir .. "/haproxy.cfg"
    server.write_file(cfg, config(lb))
    local check = server.capture(BIN .. " -c -q -f " .. server.quote(cfg) .. " 2>&1; echo status=$?")
    assert(check:match("status=0"), "haproxy refuses its configuration:\n" .. check)
    -- -db: in the foreground, so that `log stdout` reaches the log file
    lb.pid = server.launch(BIN .. " -db -f " .. server.quote(cfg), lb.log_path, lb.dir .. "/pid", lb.dir .. "/rc",
        "haproxy")
    assert(server.wait_until(function() return lb:exited() or lb:stats() ~= nil end, 10)
        and not lb:exited(), "haproxy did not start:\n" .. lb:log_text())
    return lb
end

return M
