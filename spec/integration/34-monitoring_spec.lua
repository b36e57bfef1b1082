-- scripts/monitoring/: the alert rules pass promtool's check and their unit
-- tests, the dashboard is a Grafana JSON model whose every panel has a title
-- and a query, and every metric name the rules and the dashboard query is one
-- that a running server's /metrics shows (HELP and TYPE count: some series
-- appear only after their first event).
--
-- promtool comes from Debian's prometheus package (vendor/packages.txt).
-- Without it the promtool cases are skipped, unless CI is set: there a
-- missing promtool fails them.
local server = require "support.server"
local suite = require "support.suite"
local http = require "support.http"
local auth = require "support.auth"
local telnyx = require "support.telnyx"
local cjson = require "cjson"

local DIR <const> = "scripts/monitoring"
local RULES <const> = DIR .. "/steeple-alerts.yml"
local RULE_TESTS <const> = DIR .. "/steeple-alerts.test.yml"
local DASHBOARD <const> = DIR .. "/steeple-dashboard.json"

local function in_ci()
    local ci = os.getenv("CI")
    return ci ~= nil and ci ~= "" and ci ~= "false" and ci ~= "0"
end

local function have_promtool()
    return server.capture("command -v promtool || true"):match("promtool") ~= nil
end

-- true when promtool is there; otherwise the case is pending (outside CI) or
-- fails (in CI).
local function need_promtool()
    if have_promtool() then return true end
    assert(not in_ci(), "promtool is missing and CI is set: install Debian's prometheus (vendor/install.sh)")
    pending("promtool is not installed (Debian package prometheus); the alert rules are not checked")
    return false
end

-- Runs promtool in the repository root; returns its exit status and output.
local function promtool(args)
    local out = server.tmpdir() .. "/promtool.out"
    local status = os.execute(string.format("cd %s && promtool %s >%s 2>&1",
        server.quote(server.ROOT), args, server.quote(out)))
    return status == true and 0 or 1, server.read_file(out) or ""
end

-- The PromQL of each rule: the text after `expr:`, on its line or in the
-- block below it (the lines indented deeper than the key).
local function rule_exprs(yaml)
    local exprs, current, indent = {}, nil, nil
    for line in (yaml .. "\n"):gmatch("([^\n]*)\n") do
        local lead = #line:match("^( *)")
        if current and (line:match("^%s*$") or lead > indent) then
            current[#current + 1] = line
        else
            if current then exprs[#exprs + 1] = table.concat(current, "\n") end
            current = nil
            local key_indent, rest = line:match("^( *)expr:%s*(.-)%s*$")
            if key_indent then
                if rest == "|" or rest == ">" or rest == "|-" or rest == ">-" then
                    current, indent = {}, #key_indent
                else
                    exprs[#exprs + 1] = rest
                end
            end
        end
    end
    if current then exprs[#exprs + 1] = table.concat(current, "\n") end
    return exprs
end

-- The dashboard's panels, those inside rows included.
local function panels_of(dash)
    local all = {}
    for _, p in ipairs(dash.panels or {}) do
        all[#all + 1] = p
        for _, inner in ipairs(p.panels or {}) do all[#all + 1] = inner end
    end
    return all
end

local function dashboard_exprs(dash)
    local exprs = {}
    for _, p in ipairs(panels_of(dash)) do
        for _, t in ipairs(p.targets or {}) do exprs[#exprs + 1] = t.expr end
    end
    return exprs
end

-- Every steeple_ identifier of the expressions, once each, sorted.
local function metric_names(exprs)
    local seen, names = {}, {}
    for _, e in ipairs(exprs) do
        for name in e:gmatch("steeple_[%w_]*") do
            if not seen[name] then
                seen[name] = true
                names[#names + 1] = name
            end
        end
    end
    table.sort(names)
    return names
end

-- The families of an exposition text ({ [name] = type }, from its TYPE
-- lines) and the names of its samples.
local function exposition_names(text)
    local families, samples = {}, {}
    for line in text:gmatch("[^\n]+") do
        local name, kind = line:match("^# TYPE (%S+) (%S+)")
        if name then
            families[name] = kind
        elseif line:sub(1, 1) ~= "#" then
            samples[line:match("^[%w_:]+")] = true
        end
    end
    return families, samples
end

-- The names that neither a family nor a sample of the text has; a
-- histogram's _bucket, _sum and _count count as its family's.
local function missing_names(names, text)
    local families, samples = exposition_names(text)
    local missing = {}
    for _, name in ipairs(names) do
        local base = name:match("^(.-)_bucket$") or name:match("^(.-)_sum$") or name:match("^(.-)_count$")
        if not (families[name] or samples[name] or (base and families[base] == "histogram")) then
            missing[#missing + 1] = name
        end
    end
    return missing
end

describe("the alert rules", function()
    it("pass promtool check rules", function()
        if not need_promtool() then return end
        local status, out = promtool("check rules " .. RULES)
        assert.equal(0, status, out)
        assert.matches("SUCCESS: 7 rules found", out)
    end)

    it("pass their unit tests: 5xx, breaker and the others fire, and stay quiet short of it", function()
        if not need_promtool() then return end
        local status, out = promtool("test rules " .. RULE_TESTS)
        assert.equal(0, status, out)
        assert.matches("SUCCESS", out)
        -- the unit tests cover every alert, firing and not firing
        local tests = server.read_file(server.ROOT .. "/" .. RULE_TESTS)
        for name in server.read_file(server.ROOT .. "/" .. RULES):gmatch("alert: (%w+)") do
            assert.truthy(tests:find("alertname: " .. name .. "\n", 1, true), name .. " has no unit test")
        end
        assert.truthy(tests:find("alertname: SteepleHigh5xxRate\n        exp_alerts: []", 1, true))
        assert.truthy(tests:find("alertname: SteepleCircuitOpen\n        exp_alerts: []", 1, true))
    end)

    it("state severity, summary and description, and a for: where a blip must not fire", function()
        local yaml = server.read_file(server.ROOT .. "/" .. RULES)
        local starts = {}
        for pos in yaml:gmatch("()\n      %- alert: ") do starts[#starts + 1] = pos end
        assert.equal(7, #starts)
        starts[#starts + 1] = #yaml + 1
        for i = 1, #starts - 1 do
            local rule = yaml:sub(starts[i], starts[i + 1] - 1)
            local name = rule:match("alert: (%w+)")
            assert.truthy(rule:find("\n          severity: %a+"), name .. " has no severity")
            assert.truthy(rule:find("\n          summary: "), name .. " has no summary")
            assert.truthy(rule:find("\n          description: "), name .. " has no description")
            if name ~= "SteepleScriptReloadFailed" then -- a failed reload is news at once
                assert.truthy(rule:find("\n        for: %d+m\n"), name .. " has no for:")
            end
        end
        assert.equal(7, #rule_exprs(yaml))
    end)
end)

describe("the dashboard", function()
    local dash = cjson.decode(server.read_file(server.ROOT .. "/" .. DASHBOARD))

    it("is a Grafana JSON model on a Prometheus data source variable", function()
        assert.is_string(dash.title)
        assert.is_string(dash.uid)
        assert.is_true(dash.schemaVersion >= 36 and dash.schemaVersion <= 41, tostring(dash.schemaVersion))
        local ds
        for _, v in ipairs(dash.templating.list) do
            if v.type == "datasource" and v.query == "prometheus" then ds = v.name end
        end
        assert.equal("datasource", ds)
    end)

    it("has a title and at least one query on every panel, each from the data source variable", function()
        local panels = panels_of(dash)
        assert.is_true(#panels >= 15, #panels .. " panels")
        local ids = {}
        for i, p in ipairs(panels) do
            assert.is_string(p.title, "panel " .. i .. " has no title")
            assert.is_true(#p.title > 0, "panel " .. i .. " has an empty title")
            assert.is_table(p.targets, p.title .. " has no targets")
            assert.is_true(#p.targets >= 1, p.title .. " has no targets")
            for _, t in ipairs(p.targets) do
                assert.is_string(t.expr, p.title .. ": a target without expr")
                assert.truthy(t.expr:find("steeple_", 1, true), p.title .. ": a query of no steeple metric")
            end
            assert.equal("${datasource}", p.datasource.uid, p.title)
            assert.is_nil(ids[p.id], "two panels have the id " .. tostring(p.id))
            ids[p.id] = true
        end
    end)

    it("queries only PromQL that promtool parses", function()
        if not need_promtool() then return end
        -- each query as a recording rule, Grafana's variables given values
        local lines = { "groups:", "  - name: dashboard", "    rules:" }
        for i, e in ipairs(dashboard_exprs(dash)) do
            e = e:gsub("%$__rate_interval", "5m"):gsub("%$job", ".*"):gsub("%$instance", ".*")
            lines[#lines + 1] = "      - record: steeple:dashboard_query_" .. i
            lines[#lines + 1] = "        expr: '" .. e:gsub("'", "''"):gsub("\n", " ") .. "'" -- YAML single quotes
        end
        local path = server.tmpdir() .. "/dashboard-rules.yml"
        server.write_file(path, table.concat(lines, "\n") .. "\n")
        local status, out = promtool("check rules " .. server.quote(path))
        assert.equal(0, status, out)
    end)
end)

describe("the metric names of the rules and the dashboard", function()
    local reg, tx
    local srv = suite.server(function()
        reg = auth.registry("monitoring")
        tx = telnyx.new()
        return {
            config = { workers = 2 },
            env = { DATABASE_URL = reg.url, STEEPLE_TENANT_DATABASE_URLS = false, TELNYX_PUBLIC_KEY = tx.public_key },
        }
    end, {
        after = function()
            reg:drop()
        end,
    })

    it("are all on /metrics of a server that answered a few requests", function()
        assert.equal(200, http.request({ port = srv.port, path = "/health" }).status)
        assert.equal(404, http.request({ port = srv.port, path = "/no/such/path" }).status)
        local hook = "/api/webhooks/telnyx/messaging"
        -- a number no church has: kept as a dead letter
        local res = tx:post(srv, hook, telnyx.received("mon-1", "+15559500001", "+15559599999"))
        assert.equal(202, res.status, res.body)
        local body = telnyx.received("mon-2", "+15559500001", "+15559599999")
        res = tx:post(srv, hook, body, { ["Content-Type"] = "application/json", ["telnyx-timestamp"] = tostring(os.time()),
            ["telnyx-signature-ed25519"] = string.rep("A", 86) .. "==" })
        assert.equal(401, res.status, res.body)

        local values, scrape = srv:metrics()
        -- the requests above are counted
        local not_found = 0
        for key, v in pairs(values) do
            if key:match("^steeple_http_requests_total{.*status=\"404\"") then not_found = not_found + v end
        end
        assert.is_true(not_found >= 1, "no 404 in steeple_http_requests_total")
        assert.equal(1, values['steeple_webhooks_total{result="invalid_signature"}'])
        assert.equal(1, (values['steeple_webhooks_total{result="unroutable"}'] or 0)
            + (values['steeple_webhooks_total{result="spooled"}'] or 0))

        local dash = cjson.decode(server.read_file(server.ROOT .. "/" .. DASHBOARD))
        local rules = server.read_file(server.ROOT .. "/" .. RULES)
        local from_dashboard = metric_names(dashboard_exprs(dash))
        local from_rules = metric_names(rule_exprs(rules))
        assert.is_true(#from_dashboard >= 15, table.concat(from_dashboard, " "))
        assert.is_true(#from_rules >= 6, table.concat(from_rules, " "))
        assert.same({}, missing_names(from_dashboard, scrape.body))
        assert.same({}, missing_names(from_rules, scrape.body))
        -- and the check itself finds a name that is not there
        assert.same({ "steeple_no_such_metric_total" },
            missing_names({ "steeple_spool_pending", "steeple_no_such_metric_total" }, scrape.body))
        assert.same({}, srv:unexpected_errors())
    end)

    it("stops on SIGTERM with status 0 and leaves no error lines in the log", function()
        srv:assert_stops_cleanly()
    end)
end)
