-- steeple migrate registry|tenants against real databases: ordering,
-- checksums, the lock, failures in one tenant, the template.
local server = require "support.server"
local pg = require "support.pg"

local BASE_URL = assert(pg.BASE_URL, "DATABASE_URL must point at the test cluster")
local psql, url_of = pg.psql, pg.url_of

local counter = 0
local function fresh_database()
    counter = counter + 1
    local name = string.format("migtest_%d_%d", os.time() % 100000, counter)
    local _, ok = psql(BASE_URL, "CREATE DATABASE " .. name)
    assert(ok, "cannot create " .. name)
    return name
end

local function drop_database(name)
    psql(BASE_URL, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)")
end

-- A migrations directory with the given registry and tenant files.
local function migrations(files)
    local dir = server.tmpdir()
    os.execute("mkdir -p " .. server.quote(dir .. "/registry") .. " " .. server.quote(dir .. "/tenant"))
    for area, list in pairs(files) do
        local names = {}
        for i, f in ipairs(list) do
            names[i] = string.format("%q", f[1])
            server.write_file(dir .. "/" .. area .. "/" .. f[1], f[2])
        end
        server.write_file(dir .. "/" .. area .. "/init.lua", "return { " .. table.concat(names, ", ") .. " }\n")
    end
    return dir
end

local function run_migrate(dbname, dir, args)
    local cfg = server.tmpdir() .. "/config.lua"
    server.write_file(cfg, string.format("return { db = { migrations_dir = %q } }", dir))
    local argv = { "migrate" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    argv[#argv + 1] = "--config"
    argv[#argv + 1] = cfg
    return server.run_binary(argv, { DATABASE_URL = url_of(dbname), STEEPLE_TENANT_DATABASE_URLS = false }, 60)
end

describe("migrate", function()
    local created = {}
    local function db()
        local name = fresh_database()
        created[#created + 1] = name
        return name
    end

    teardown(function()
        for _, name in ipairs(created) do drop_database(name) end
        server.cleanup()
    end)

    describe("registry", function()
        it("applies the listed files in order, once, recording their checksums", function()
            local name = db()
            local dir = migrations { registry = {
                { "0001_a.sql", "CREATE TABLE a (id int);" },
                { "0002_b.sql", "CREATE TABLE b (id int); INSERT INTO a VALUES (1);" },
            } }
            local status, err, out = run_migrate(name, dir, { "registry" })
            assert.equal(0, status, err)
            assert.matches("registry: 2 applied, 0 already applied", out)
            local status2, err2, out2 = run_migrate(name, dir, { "registry" })
            assert.equal(0, status2, err2)
            assert.matches("registry: 0 applied, 2 already applied", out2)
            assert.equal("0001_a.sql\n0002_b.sql", (psql(url_of(name), "SELECT name FROM schema_migrations ORDER BY name")))
            assert.equal("1", (psql(url_of(name), "SELECT count(*) FROM a")))
            local sum = psql(url_of(name), "SELECT checksum FROM schema_migrations WHERE name = '0001_a.sql'")
            local expected = io.popen("printf %s " .. server.quote("CREATE TABLE a (id int);") .. " | sha256sum"):read("l")
            assert.equal(expected:match("^(%x+)"), sum)
        end)

        it("stops with a clear error when an applied file changed", function()
            local name = db()
            local dir = migrations { registry = { { "0001_a.sql", "CREATE TABLE a (id int);" } } }
            assert.equal(0, (run_migrate(name, dir, { "registry" })))
            server.write_file(dir .. "/registry/0001_a.sql", "CREATE TABLE a (id bigint);")
            local status, err = run_migrate(name, dir, { "registry" })
            assert.equal(1, status)
            assert.matches("migration 0001_a.sql was changed after it was applied", err)
        end)

        it("rolls back a failing migration and keeps the ones before it", function()
            local name = db()
            local dir = migrations { registry = {
                { "0001_ok.sql", "CREATE TABLE ok (id int);" },
                { "0002_bad.sql", "CREATE TABLE half (id int); SELECT * FROM no_such_table;" },
            } }
            local status, err = run_migrate(name, dir, { "registry" })
            assert.equal(1, status)
            assert.matches("migration 0002_bad.sql failed", err)
            assert.equal("0001_ok.sql", (psql(url_of(name), "SELECT name FROM schema_migrations")))
            assert.equal("f", (psql(url_of(name), "SELECT to_regclass('half') IS NOT NULL")))
        end)

        it("runs two at once without interleaving: each file applied exactly once", function()
            local name = db()
            local dir = migrations { registry = {
                { "0001_slow.sql", "CREATE TABLE slow (id int); SELECT pg_sleep(1);" },
                { "0002_next.sql", "INSERT INTO slow VALUES (1);" },
            } }
            local base = server.tmpdir()
            local cfg = base .. "/config.lua"
            server.write_file(cfg, string.format("return { db = { migrations_dir = %q } }", dir))
            local env = { DATABASE_URL = url_of(name), STEEPLE_TENANT_DATABASE_URLS = false }
            local cmd = server.command({ "migrate", "registry", "--config", cfg }, env)
            local script = string.format("cd %s && (%s > %s/1 2>&1; echo $? > %s/rc1) & (%s > %s/2 2>&1; echo $? > %s/rc2) & wait",
                server.quote(server.ROOT), cmd, base, base, cmd, base, base)
            os.execute(script)
            assert.equal("0", server.read_file(base .. "/rc1"):gsub("%s", ""))
            assert.equal("0", server.read_file(base .. "/rc2"):gsub("%s", ""))
            local outs = server.read_file(base .. "/1") .. server.read_file(base .. "/2")
            assert.matches("2 applied, 0 already applied", outs)
            assert.matches("0 applied, 2 already applied", outs)
            assert.equal("1", (psql(url_of(name), "SELECT count(*) FROM slow")))
            assert.equal("2", (psql(url_of(name), "SELECT count(*) FROM schema_migrations")))
        end)

        it("refuses a list that names a missing file", function()
            local name = db()
            local dir = migrations { registry = { { "0001_a.sql", "SELECT 1;" } } }
            server.write_file(dir .. "/registry/init.lua", 'return { "0001_a.sql", "0002_missing.sql" }')
            local status, err = run_migrate(name, dir, { "registry" })
            assert.equal(1, status)
            assert.matches("cannot read .*0002_missing.sql", err)
            assert.equal("f", (psql(url_of(name), "SELECT to_regclass('schema_migrations') IS NOT NULL")))
        end)

        it("answers a bad command with usage and status 2", function()
            local status, err = server.run_binary({ "migrate", "sideways" }, { DATABASE_URL = BASE_URL })
            assert.equal(2, status)
            assert.matches("usage: steeple migrate registry | tenants", err)
        end)
    end)

    describe("tenants", function()
        it("migrates the template and every tenant, carries on past a failing one, and says so", function()
            local registry = db()
            local dir = migrations {
                registry = { { "0001_tenants.sql", server.read_file(server.ROOT .. "/sql/registry/0001_tenants.sql") } },
                tenant = {
                    { "0001_one.sql", "CREATE TABLE one (id int);" },
                    { "0002_two.sql", "CREATE TABLE two (id int); INSERT INTO one VALUES (2);" },
                },
            }
            assert.equal(0, (run_migrate(registry, dir, { "registry" })))
            local tenants = {}
            for i = 1, 3 do
                local tname = string.format("tenant_mig%d%d", os.time() % 100000, i)
                drop_database(tname)
                assert(select(2, psql(BASE_URL, "CREATE DATABASE " .. tname)))
                created[#created + 1] = tname
                tenants[i] = tname
                psql(url_of(registry), string.format(
                    "INSERT INTO tenants (church_name, status, db_server, db_name) VALUES ('c%d', 'active', 'main', '%s')",
                    i, tname))
            end
            -- the second tenant already has a table "two": its 0002 fails there
            psql(url_of(tenants[2]), "CREATE TABLE two (x int)")
            local status, err, out = run_migrate(registry, dir, { "tenants", "--concurrency", "2" })
            assert.equal(1, status, err)
            assert.matches("tenants: 4 databases, 3 updated, 0 up to date, 1 failed", out)
            assert.matches("main/" .. tenants[2] .. ": FAILED: migration 0002_two.sql failed", out)
            for _, t in ipairs { tenants[1], tenants[3], "steeple_template" } do
                assert.equal("0001_one.sql,0002_two.sql",
                    (psql(url_of(t), "SELECT string_agg(name, ',' ORDER BY name) FROM schema_migrations")))
            end
            -- the failing tenant kept 0001 and rolled 0002 back entirely
            assert.equal("0001_one.sql", (psql(url_of(tenants[2]), "SELECT string_agg(name, ',') FROM schema_migrations")))
            assert.equal("0", (psql(url_of(tenants[2]), "SELECT count(*) FROM one")))

            -- nothing to do the second time, except the one still failing
            local status2, _, out2 = run_migrate(registry, dir, { "tenants" })
            assert.equal(1, status2)
            assert.matches("tenants: 4 databases, 0 updated, 3 up to date, 1 failed", out2)
            psql(BASE_URL, "DROP DATABASE IF EXISTS steeple_template WITH (FORCE)")
        end)
    end)
end)
