-- Routes for the benches (installed into a temporary scripts directory by
-- spec/bench/churches.sh).
local db = require "db"
local tenants = require "tenants"
local migrate = require "migrate"
local steeple = require "steeple"
local config = require "steeple.config"
local tokens = require "auth.tokens"
local uuid = require "uuid"

return {
    -- n one-row queries in a row through steeple.db; returns the seconds
    ["/bench/queries"] = {
        GET = function(req)
            local n = math.tointeger(tonumber(req:args().n)) or 1000
            local h = db.registry()
            local t0 = steeple.clock()
            for i = 1, n do
                local rows = h:query("SELECT $1::int AS n", i)
                if rows[1].n ~= i then error("wrong row") end
            end
            return { status = 200, json = { seconds = steeple.clock() - t0 } }
        end,
    },
    -- one query in a tenant's database (its pool made on first use)
    ["/bench/tenant/{id}"] = {
        GET = function(req)
            tenants.get(req.params.id):query("SELECT 1")
            return { status = 200, json = {} }
        end,
    },
    -- access tokens of one owner (?admin=id) for every church whose name
    -- starts with ?prefix=, one a line, in the order of their names
    ["/bench/tokens"] = {
        GET = function(req)
            local args, out = req:args(), {}
            local rows = db.registry():query(
                "SELECT id FROM tenants WHERE starts_with(church_name, $1) ORDER BY church_name", args.prefix)
            for i, row in ipairs(rows) do
                out[i] = tokens.access { id = args.admin, tenant_id = row.id, role = "owner" }
            end
            return { status = 200, headers = { ["Content-Type"] = "text/plain" },
                     body = table.concat(out, "\n") .. "\n" }
        end,
    },
    -- create a database from the template, or empty and migrated; seconds
    ["/bench/create/{name}"] = {
        POST = function(req)
            local name, how = req.params.name, req:args().how
            local t0 = steeple.clock()
            if how == "template" then
                db.create_database("main", name, config.db.template)
            else
                db.create_database("main", name)
                migrate.apply(db.pool("main", name), migrate.plan(config.db.migrations_dir .. "/tenant"))
                db.close_pool("main", name)
            end
            return { status = 200, json = { seconds = steeple.clock() - t0 } }
        end,
    },
    -- a stand-in for Telnyx's POST /v2/messages (telnyx.api_base pointed at
    -- the bench server): takes every message, as the API does when it queues one
    ["/v2/messages"] = {
        POST = function()
            return { status = 200, json = { data = { id = "bench-" .. uuid.new(), to = { { status = "queued" } } } } }
        end,
    },
}
