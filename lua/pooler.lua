-- Whether a database is reached through a connection pooler (PgBouncer), and
-- whether the pooler shares server sessions between client connections.
--
--   pooler.detect(handle) -> nil (PostgreSQL itself), "session" (a pooler
--       that keeps one server session per client connection) or
--       "transaction" (a pooler that hands a server session to another
--       client connection between transactions: PgBouncer's transaction or
--       statement pooling)
--
-- No pooler credentials are needed. A pooler answers the connection with its
-- own cancel key (it must route cancel requests itself), so the process id
-- libpq got at connect differs from the backend's pg_backend_pid(); on
-- PostgreSQL they are equal. Sharing shows when two connections held at once
-- run, one after the other, on the same backend: a pooler hands the session
-- it just got back to the next transaction, and PostgreSQL never gives two
-- connections one backend. Takes two connections of the handle's pool for a
-- moment; changes no session state.

local M = {}

local TRIES <const> = 5

local function backend(conn)
    return conn:query("SELECT pg_backend_pid() AS pid")[1].pid
end

function M.detect(handle)
    local a <close> = handle:acquire()
    if backend(a) == a:backend_pid() then return nil end
    local b <close> = handle:acquire()
    for _ = 1, TRIES do
        if backend(a) == backend(b) then return "transaction" end
    end
    return "session"
end

return M
