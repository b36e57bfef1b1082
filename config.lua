-- steeple configuration. Every key is optional; the values below are the
-- defaults. Environment variables win over this file (see README.md).
return {
    env = "development",          -- STEEPLE_ENV: development | production
    listen = "127.0.0.1",         -- STEEPLE_LISTEN
    port = 8080,                  -- PORT
    workers = 0,                  -- STEEPLE_WORKERS; 0 = one per CPU core
    threads = 2,                  -- CPU thread pool per worker (password hashing)
    shutdown_timeout_s = 10,      -- SIGTERM: how long in-flight requests may finish

    log = {
        level = "info",           -- debug | info | warn | error
    },

    limits = {
        body_bytes = 1048576,     -- larger request bodies get 413
        header_bytes = 16384,     -- larger header blocks are refused
        read_timeout_s = 30,      -- a connection must deliver a request within this
        request_timeout_s = 30,   -- a handler must answer within this (else 503)
        max_connections = 1024,   -- per worker; past it the worker stops accepting
        json_max_depth = 64,      -- deeper JSON bodies get 400 invalid_json
    },
}
