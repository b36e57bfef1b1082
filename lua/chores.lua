-- Chores that run once per cluster, coordinated through leases in the
-- registry (table chore_leases: name, holder, lease_until).
--
--   chores.run_if_held(name, interval_s, fn) -> true when this worker holds
--       the chore's lease (then fn() ran; its errors are raised), false when
--       another worker or node holds it (fn did not run)
--   chores.lease_s(interval_s)  -> the lease a run takes: 3 intervals, at least
--       MIN_LEASE_S seconds
--   chores.holder()             -> this worker's name in the table,
--       "<node>/<worker>" (steeple.node(): hostname and master pid)
--   chores.give_back()          -> the names of the chores whose leases this
--       worker gave back (a list); from then on it takes none (raises on a
--       database error)
--
-- One statement takes or renews a lease: it succeeds when the lease has run
-- out or this worker already holds it, so the first worker to find a chore
-- free takes it, and its holder keeps it by running the chore at its
-- interval. A holder that stops (its node killed) renews no more: another
-- worker takes the chore once lease_until has passed, within lease_s plus
-- its own interval. Times are the database's, so the nodes' clocks do not
-- matter. A run that lasts longer than its lease may overlap the next
-- holder's: the chores are safe to run twice at once, only wasteful. A
-- worker that stops gives its leases back (app.stop): the lease ends at
-- once and the next worker to look takes the chore.

local steeple = require "steeple"
local log = require "steeple.log"
local db = require "db"

local math_max, ipairs = math.max, ipairs
local concat = table.concat

local M = {}

local MIN_LEASE_S <const> = 5

local SEED <const> = [[
    INSERT INTO chore_leases (name, holder, lease_until) VALUES ($1, '', '-infinity')
    ON CONFLICT (name) DO NOTHING]]

local TAKE <const> = [[
    UPDATE chore_leases SET holder = $2, lease_until = now() + make_interval(secs => $3::float8)
    WHERE name = $1 AND (lease_until < now() OR holder = $2)
    RETURNING holder]]

local GIVE_BACK <const> = [[
    UPDATE chore_leases SET holder = '', lease_until = '-infinity' WHERE holder = $1
    RETURNING name]]

local seeded = {} -- chore names whose row this script state has made sure of
local held = {}   -- chore names this worker held at its last look
local stopping = false -- give_back ran: take nothing more

function M.lease_s(interval_s)
    return math_max(3 * interval_s, MIN_LEASE_S)
end

function M.holder()
    return steeple.node() .. "/" .. steeple.worker()
end

function M.give_back()
    stopping = true
    local names = {}
    for i, row in ipairs(db.registry():query(GIVE_BACK, M.holder())) do names[i] = row.name end
    if #names > 0 then
        log.info("chore leases given back", { chores = concat(names, ","), holder = M.holder() })
    end
    held = {}
    return names
end

-- Takes or renews the lease; true when this worker holds it now.
local function take(name, interval_s)
    if stopping then return false end
    local reg, me = db.registry(), M.holder()
    if not seeded[name] then
        reg:query(SEED, name)
        seeded[name] = true
    end
    local got = reg:query(TAKE, name, me, M.lease_s(interval_s))[1] ~= nil
    if got and stopping then -- taken while give_back was under way
        M.give_back()
        return false
    end
    if got and not held[name] then
        log.info("chore lease taken", { chore = name, holder = me })
    elseif held[name] and not got then
        log.info("chore lease held elsewhere", { chore = name, lost_by = me })
    end
    held[name] = got
    return got
end

function M.run_if_held(name, interval_s, fn)
    if not take(name, interval_s) then return false end
    fn()
    return true
end

return M
