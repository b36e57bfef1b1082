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

    db = {
        -- url: DATABASE_URL (the registry); tenant_urls: STEEPLE_TENANT_DATABASE_URLS,
        -- e.g. "east=postgresql://db-east/postgres,west=postgresql://db-west/postgres"
        pool_max = 4,             -- connections per database, per worker
        server_max_connections = 80, -- per server, over all databases and workers of this node
        min_idle = 0,
        acquire_timeout_ms = 2000,
        connect_timeout_ms = 3000,
        statement_timeout_ms = 10000,
        idle_timeout_s = 60,
        breaker_failures = 5,
        breaker_open_s = 10,
        migrations_dir = "sql",
        template = "steeple_template", -- or "none": migrate each new database
    },

    cluster = {
        nodes = 1,                -- nodes sharing each server: doctor warns past max_connections
    },

    tenants = {
        capacity = 100,           -- tenant pools per worker (LRU)
        idle_s = 1800,
        cache_ttl_s = 30,         -- registry entries (status) cached this long
        provisioning_timeout_s = 300, -- a registration cut short is undone after this
        janitor_interval_s = 60,  -- once per cluster (a lease in the registry)
    },

    auth = {
        -- jwt_secret: STEEPLE_JWT_SECRET; data_key: STEEPLE_DATA_KEY
        -- (development makes both once into var/dev-keys; production needs them)
        access_ttl_s = 900,
        refresh_ttl_s = 2592000,
        max_failures = 5,         -- failed logins that lock an account
        lock_initial_s = 30,      -- doubling with each further lock
        lock_max_s = 3600,
        rate_per_min = 60,        -- STEEPLE_AUTH_RATE_PER_MIN; per client address and node; 0 = off
        -- trusted_proxies = "10.0.0.0/8",  -- whose X-Forwarded-For is believed
        argon2_memory_kib = 19456, -- OWASP minimum; at most threads x this per worker
        argon2_iterations = 2,
    },

    telnyx = {
        -- public_key: TELNYX_PUBLIC_KEY; api_key: TELNYX_API_KEY
        tolerance_s = 300,        -- webhook timestamps this far from now are refused
        api_base = "https://api.telnyx.com", -- TELNYX_API_BASE
        send_attempts = 5,
        timeout_ms = 10000,
        sweep_interval_s = 5,     -- queued outbound messages looked for, once per cluster (0 = never)
    },

    metrics = {
        allow = "127.0.0.0/8,::1", -- client addresses or CIDR blocks that may read /metrics
    },

    spool = {
        dir = "var/spool",        -- STEEPLE_SPOOL_DIR
        replay_interval_s = 1,
    },
}
