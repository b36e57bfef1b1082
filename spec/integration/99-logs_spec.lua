-- Last: the logs of every server the suite started hold none of the
-- passwords, emails, tokens or message texts the specs sent.
local secrets = require "support.secrets"
local server = require "support.server"

describe("the logs of the whole suite", function()
    if secrets.dir == nil then
        pending("needs STEEPLE_SPEC_LOGS (set by spec/run.sh)")
        return
    end

    it("hold no password, email, token or message text", function()
        local list = server.read_file(secrets.dir .. "/secrets") or ""
        local nsecrets = select(2, list:gsub("\n", ""))
        local logs = tonumber((server.capture("ls " .. server.quote(secrets.dir) .. " | grep -c '\\.log$'")))
        assert.is_true(nsecrets >= 100, "only " .. nsecrets .. " secrets were recorded")
        assert.is_true(logs >= 3, "only " .. logs .. " server logs were kept")
        -- grep -F: every secret a fixed string, all logs at once
        local found = server.capture(string.format("cd %s && grep -F -o -h -f secrets -- *.log | sort -u | head -5",
            server.quote(secrets.dir)))
        assert.equal("", found)
    end)
end)
