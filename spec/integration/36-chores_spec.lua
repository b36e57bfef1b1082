-- Chores that run once per cluster (the janitor, the outbound sweep, the
-- broadcast stall report): two nodes (two serve processes, their own ports
-- and spools, one registry) share them through the registry's chore_leases.
local server = require "support.server"
local pg = require "support.pg"
local auth = require "support.auth"

local psql = pg.psql

local CHORES = { "janitor", "outbound_sweep", "broadcast_stall" }
local INTERVAL_S = 1
local LEASE_S = 5 -- chores.lease_s(1): 3 intervals, at least 5 s

-- The registry, nodes and scripts of the describe block that runs (each
-- sets them up in its setup and stops them in its teardown).
local reg, scripts
local nodes = {} -- name -> server

local function start(name)
    nodes[name] = server.start {
        scripts = scripts,
        config = { workers = 2,
                   tenants = { janitor_interval_s = INTERVAL_S, provisioning_timeout_s = 10 },
                   telnyx = { sweep_interval_s = INTERVAL_S, api_base = "http://127.0.0.1:1" },
                   messaging = { dispatch_interval_s = INTERVAL_S } },
        env = reg.env,
    }
    return nodes[name]
end

local function stop_all()
    for _, srv in pairs(nodes) do srv:stop(10) end
    nodes = {}
    reg:drop()
    server.cleanup()
end

-- chore name -> holder, for the leases held now
local function holders()
    local out = {}
    local rows = psql(reg.url, "SELECT name, holder FROM chore_leases WHERE lease_until > now() ORDER BY name")
    for name, holder in rows:gmatch("([^\n|]+)|([^\n]*)") do out[name] = holder end
    return out
end

-- The node (its name) whose worker the holder text names, or nil.
local function node_of(holder)
    for name, srv in pairs(nodes) do
        if holder and holder:match("^.+:" .. srv.pid .. "/[01]$") then return name end
    end
    return nil
end

local function all_held_by(name)
    local h = holders()
    for _, chore in ipairs(CHORES) do
        if node_of(h[chore]) ~= name then return false end
    end
    return true
end

describe("chores shared by two nodes", function()

    -- A registration cut short: a provisioning tenant an hour old, with its database.
    local function cut_short(n)
        local dbname = "tenant_chores" .. n .. "x" .. auth.STAMP
        psql(pg.BASE_URL, "DROP DATABASE IF EXISTS " .. dbname .. " WITH (FORCE)")
        assert(select(2, psql(pg.BASE_URL, "CREATE DATABASE " .. dbname)))
        local id = psql(reg.url, "INSERT INTO tenants (church_name, db_server, db_name, created_at) VALUES "
            .. "('cut short " .. n .. "', 'main', '" .. dbname .. "', now() - interval '1 hour') RETURNING id")
        assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", id)
        return id
    end

    local function count(sql) return reg:count(sql) end

    local function undone(srv)
        return srv:log_count("janitor undid a registration cut short")
    end

    setup(function()
        reg = auth.registry("chorespec")
        start("a")
        start("b")
    end)

    teardown(stop_all)

    it("gives each chore one holder at a time, which keeps it", function()
        assert.truthy(server.wait_until(function()
            local h = holders()
            return h.janitor and h.outbound_sweep and h.broadcast_stall
        end, 10), "the chores were never taken")
        local first = holders()
        for _, chore in ipairs(CHORES) do assert.truthy(node_of(first[chore]), first[chore]) end
        -- sampled over 4 lease renewals: one row per chore, the same holder, never run out
        for _ = 1, 16 do
            assert.same(first, holders())
            assert.equal("3", psql(reg.url, "SELECT count(*) FROM chore_leases"))
            os.execute("sleep 0.25")
        end
        -- each chore was taken once, by one worker of one node, and never changed hands
        for _, chore in ipairs(CHORES) do
            local taken = {}
            for name, srv in pairs(nodes) do
                for _, e in ipairs(srv:entries { msg = "chore lease taken", chore = chore }) do
                    taken[#taken + 1] = name .. " " .. e.holder
                end
            end
            assert.equal(1, #taken, chore .. ": " .. table.concat(taken, ", "))
            assert.equal(node_of(first[chore]) .. " " .. first[chore], taken[1])
        end
        for _, srv in pairs(nodes) do assert.same({}, srv:unexpected_errors()) end
    end)

    it("runs the janitor once: on the holder's worker, each registration cut short undone once", function()
        local ids = { cut_short(1), cut_short(2), cut_short(3) }
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM tenants WHERE id IN ('" .. table.concat(ids, "','") .. "')") == 0
        end, 15), "the janitor never removed the registrations")
        local holder = holders().janitor
        local worker = tonumber(holder:match("/(%d)$"))
        local srv = nodes[node_of(holder)]
        local function by_holder() return #srv:entries { msg = "janitor undid a registration cut short", worker = worker } end
        -- log lines reach the file a little after the rows go (they are written in batches)
        server.wait_until(function() return by_holder() >= 3 end, 5)
        assert.equal(3, by_holder())
        local total = 0
        for _, s in pairs(nodes) do total = total + undone(s) end
        assert.equal(3, total)
        for _, s in pairs(nodes) do assert.same({}, s:unexpected_errors()) end
    end)

    it("runs no chore while another holds its lease, and the lease's loser says so", function()
        local holder = holders().janitor
        local srv = nodes[node_of(holder)]
        -- a holder of another cluster member, whose lease runs for a while
        psql(reg.url, "UPDATE chore_leases SET holder = 'elsewhere:1/0', lease_until = now() + interval '6 seconds' "
            .. "WHERE name = 'janitor'")
        local id = cut_short(5)
        assert.truthy(srv:wait_entry { msg = "chore lease held elsewhere", chore = "janitor", lost_by = holder },
            "the former holder did not notice")
        os.execute("sleep " .. (2 * INTERVAL_S))
        assert.equal(1, count("SELECT count(*) FROM tenants WHERE id = '" .. id .. "'"))
        -- its lease ends unrenewed: a node takes the janitor again and runs it
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM tenants WHERE id = '" .. id .. "'") == 0
        end, 10), "the janitor never ran again")
        assert.truthy(node_of(holders().janitor))
        for _, s in pairs(nodes) do assert.same({}, s:unexpected_errors()) end
    end)

    it("reports the broadcast stall on the holder's node only", function()
        local church = reg:church(nodes.a, "stalled", { phoneNumber = "+15559350001" })
        -- a church whose broadcast turns have made no progress for 5 minutes (and
        -- whose next turn is an hour away: the dispatchers leave it alone)
        psql(reg.url, "INSERT INTO broadcast_tenants (tenant_id, due_at, progress_due_at) VALUES ('"
            .. church.id .. "', now() + interval '1 hour', now() - interval '300 seconds')")
        local reporter = node_of(holders().broadcast_stall)
        local other = reporter == "a" and "b" or "a"
        assert.truthy(server.wait_until(function()
            return nodes[reporter]:metric("steeple_broadcast_stall_seconds") >= 300
        end, 10), "the holder's node never reported the stall")
        assert.equal(0, nodes[other]:metric("steeple_broadcast_stall_seconds"))
        psql(reg.url, "DELETE FROM broadcast_tenants")
        for _, s in pairs(nodes) do assert.same({}, s:unexpected_errors()) end
    end)

    it("hands the chores of a node killed with SIGKILL to the other once their leases end", function()
        local dead = node_of(holders().janitor)
        local survivor = dead == "a" and "b" or "a"
        nodes[dead]:kill()
        -- the dead node's leases end (moved into the past here rather than waited for)
        psql(reg.url, "UPDATE chore_leases SET lease_until = now() - interval '1 second'")
        local started = server.now()
        assert.truthy(server.wait_until(function() return all_held_by(survivor) end, INTERVAL_S + 3),
            "the survivor did not take the chores")
        print(string.format("# taken over %.1f s after the leases ended", server.now() - started))
        -- and runs them: a registration cut short is undone by the survivor
        local before = undone(nodes[survivor])
        local id = cut_short(4)
        assert.truthy(server.wait_until(function()
            return count("SELECT count(*) FROM tenants WHERE id = '" .. id .. "'") == 0
        end, 15), "the survivor's janitor never ran")
        server.wait_until(function() return undone(nodes[survivor]) > before end, 5) -- its log line, written in a batch
        assert.equal(before + 1, undone(nodes[survivor]))
        assert.same({}, nodes[survivor]:unexpected_errors())
    end)

    it("takes over by itself within the lease and one interval when the holder's node dies", function()
        -- the node killed before comes back: it holds nothing, the other node keeps every chore
        local holder = node_of(holders().janitor)
        local back = holder == "a" and "b" or "a"
        nodes[back]:stop(2)
        start(back)
        os.execute("sleep " .. (2 * INTERVAL_S))
        assert.truthy(all_held_by(holder), "the chores changed hands when a node came back")
        nodes[holder]:kill()
        local killed = server.now()
        assert.truthy(server.wait_until(function() return all_held_by(back) end, LEASE_S + INTERVAL_S + 3),
            "the chores were not taken over within the lease")
        local took = server.now() - killed
        print(string.format("# taken over %.1f s after the holder was killed (lease %d s, interval %d s)",
            took, LEASE_S, INTERVAL_S))
        assert.is_true(took <= LEASE_S + INTERVAL_S + 1, "took " .. took .. " s")
        assert.truthy(nodes[back]:wait_log("chore lease taken"))
        nodes[back]:assert_stops_cleanly()
    end)
end)

-- A node told to stop (SIGTERM) gives its leases back (app.stop): with a
-- lease far longer than the interval, the other node takes the chores at its
-- next look instead of once the lease ends.
describe("chores of a node stopped with SIGTERM", function()
    local LONG_LEASE_S = 30

    setup(function()
        reg = auth.registry("chorestop")
        -- the scripts of both nodes, with leases of LONG_LEASE_S
        scripts = server.scripts_dir()
        local path = scripts .. "/chores.lua"
        local text, n = server.read_file(path):gsub("MIN_LEASE_S <const> = %d+",
            "MIN_LEASE_S <const> = " .. LONG_LEASE_S)
        assert(n == 1, "chores.lua has no MIN_LEASE_S")
        server.write_file(path, text)
        start("a")
        assert(server.wait_until(function() return all_held_by("a") end, 10), "node a never took the chores")
        start("b")
    end)

    teardown(stop_all)

    it("hands them to the other node within seconds, not the lease", function()
        -- a keeps them while it runs: the leases are long
        os.execute("sleep " .. (2 * INTERVAL_S))
        assert.truthy(all_held_by("a"), "the chores changed hands while node a ran")
        local left = tonumber((psql(reg.url, "SELECT min(extract(epoch FROM lease_until - now())) FROM chore_leases")))
        assert.is_true(left > LONG_LEASE_S - 5, "lease left: " .. tostring(left))
        local stopped = server.now()
        local in_time, status = nodes.a:stop(10)
        assert.is_true(in_time)
        assert.equal(0, status)
        local given = nodes.a:entries { msg = "chore leases given back" }
        local names = {}
        for _, e in ipairs(given) do
            for chore in e.chores:gmatch("[^,]+") do names[#names + 1] = chore end
        end
        table.sort(names)
        local want = { table.unpack(CHORES) }
        table.sort(want)
        assert.same(want, names)
        assert.truthy(server.wait_until(function() return all_held_by("b") end, INTERVAL_S + 5),
            "node b did not take the chores")
        local took = server.now() - stopped
        print(string.format("# taken over %.1f s after SIGTERM (lease %d s, interval %d s)",
            took, LONG_LEASE_S, INTERVAL_S))
        assert.is_true(took < LONG_LEASE_S / 2, "took " .. took .. " s")
        assert.same({}, nodes.a:unexpected_errors())
        nodes.b:assert_stops_cleanly()
    end)
end)
