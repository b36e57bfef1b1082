-- The zones of the broadcasts' area code table (lua/broadcasts/area_codes.lua)
-- are names PostgreSQL knows, so a recipient's local time can be computed in SQL.
local server = require "support.server"
local pg = require "support.pg"

assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")

describe("area code zones", function()
    local srv

    setup(function()
        srv = server.start { config = { workers = 1 } }
    end)

    teardown(function()
        if srv then srv:stop(5) end
    end)

    it("are every one a time zone of pg_timezone_names", function()
        srv:mark()
        local codes = dofile("lua/broadcasts/area_codes.lua")
        local wanted, list = {}, {}
        for _, zone in pairs(codes) do
            if not wanted[zone] then
                wanted[zone] = true
                list[#list + 1] = "'" .. zone .. "'"
            end
        end
        table.sort(list)
        local out, ok = pg.psql(pg.BASE_URL, "SELECT string_agg(z, ',' ORDER BY z) FROM unnest(ARRAY["
            .. table.concat(list, ",") .. "]) AS z WHERE z NOT IN (SELECT name FROM pg_timezone_names)")
        assert.is_true(ok, out)
        assert.are.equal("", out, "zones PostgreSQL does not know: " .. out)
        assert.same({}, srv:unexpected_errors())
    end)
end)
