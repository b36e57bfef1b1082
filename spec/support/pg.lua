-- PostgreSQL helpers for the integration specs: psql against the test
-- cluster (DATABASE_URL, set by spec/run.sh) and URLs of its other databases.
--
--   pg.BASE_URL                  the test cluster's URL
--   pg.sh(cmd [, timeout])       -> output (trimmed), ok   (bounded: default 300 s)
--   pg.psql(url, sql)            -> output (trimmed), ok
--   pg.psql_file(url, text)      runs a script of statements, each on its own
--   pg.url_of(dbname [, user [, base]])   the URL of another database
--   pg.hold(url, tbl, seconds)   locks table tbl (SHARE: writes wait) from a
--       session in the background for `seconds`; returns once the lock is
--       held, with a mark that the session's query carries
--   pg.uncommitted(url, sql, seconds)  runs sql in a transaction of a
--       session in the background and commits it after `seconds`; returns
--       once sql has run, with the session's mark
local server = require "support.server"

local M = {}

M.BASE_URL = os.getenv("DATABASE_URL")

function M.sh(cmd, timeout)
    local p = assert(io.popen("timeout -s KILL " .. (timeout or 300) .. " sh -c " .. server.quote(cmd) .. " 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    return (out:gsub("%s+$", "")), ok
end

function M.psql(url, sql)
    return M.sh("psql " .. server.quote(url) .. " -XAtq -v ON_ERROR_STOP=1 -c " .. server.quote(sql))
end

function M.psql_file(url, text)
    local path = server.tmpdir() .. "/script.sql"
    server.write_file(path, text)
    return M.sh("psql " .. server.quote(url) .. " -XAtq -f " .. server.quote(path))
end

function M.url_of(dbname, user, base)
    local url = (base or M.BASE_URL):gsub("^(postgresql://)[^@/]*(@?[^/]*/)[^?]*",
        "%1" .. (user or "steeple") .. "%2" .. dbname)
    return url
end

local holds = 0

function M.uncommitted(url, sql, seconds)
    holds = holds + 1
    local mark = string.format("hold-%d-%d", os.time(), holds)
    os.execute(string.format("psql -XAtq %s -c %s >/dev/null 2>&1 &", server.quote(url),
        server.quote(string.format("BEGIN; %s; SELECT '%s', pg_sleep(%g); COMMIT", sql, mark, seconds))))
    assert(server.wait_until(function()
        return M.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%" .. mark .. "%' "
            .. "AND state = 'active' AND pid <> pg_backend_pid()") == "1"
    end, 5), "the session's statement did not run: " .. sql)
    return mark
end

function M.hold(url, tbl, seconds)
    return M.uncommitted(url, "LOCK TABLE " .. tbl .. " IN SHARE MODE", seconds)
end

return M
