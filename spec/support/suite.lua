-- The setup and teardown shared by the integration specs: one server per
-- describe block, started in setup(), marked before each case (so that each
-- case's closing log check sees only its own lines), stopped and its
-- temporary files removed in teardown().
--
--   local suite = require "support.suite"
--
--   describe("http", function()
--       local srv = suite.server { config = { workers = 2 } }
--       -- or suite.server(function() return { config = ... } end, { stop_s = 10 })
--       -- when the options are known only in setup (a database made there)
--
--       it("answers /health", function()
--           ...
--           assert.same({}, srv:unexpected_errors())   -- every case ends so
--       end)
--   end)
--
-- suite.server(opts [, how]) must be called directly inside describe(). opts
-- are server.start's options, or a function returning them, called in
-- setup(). It returns a stand-in for the server that server.start returns:
-- reads, writes and method calls reach the running server (before setup()
-- has run, srv.port and the like are nil). how:
--   stop_s = 5        how long teardown() waits for the server to stop
--   mark = true       false: no srv:mark() before each case
--   before = fn()     runs in setup() before the server starts
--   after = fn()      runs in teardown() after the server stopped, before
--                     server.cleanup()
-- A case may stop the server itself (srv:assert_stops_cleanly(), srv:stop()):
-- a server stops once, so teardown()'s stop then signals nothing and only
-- the cleanup is left to do.
-- The older helpers (support.server, support.http, ...) work as before; a
-- spec may use them directly for servers it starts and stops itself.
local busted = require "busted"
local server = require "support.server"

local setmetatable, type = setmetatable, type
local setup, teardown, before_each = busted.setup, busted.teardown, busted.before_each

local M = {}

-- A table that stands in for the server held in box.current.
local function stand_in(box)
    return setmetatable({}, {
        __index = function(_, k)
            local real = box.current
            return real and real[k]
        end,
        __newindex = function(_, k, v)
            box.current[k] = v
        end,
    })
end

function M.server(opts, how)
    how = how or {}
    local box = {}
    local srv = stand_in(box)
    setup(function()
        if how.before then how.before() end
        box.current = server.start(type(opts) == "function" and opts() or opts)
    end)
    teardown(function()
        if box.current then box.current:stop(how.stop_s or 5) end -- a no-op once stopped
        if how.after then how.after() end
        server.cleanup()
    end)
    if how.mark ~= false then
        before_each(function() srv:mark() end)
    end
    return srv
end

return M
