-- The consent keywords of an inbound text (lua/messaging/consent.lua): the
-- words of API.md's table, trimmed, case-insensitive, trailing punctuation
-- dropped; a longer sentence is never a keyword.

local CORE_MODULES = { "steeple", "steeple.db" }

local function inert()
    return setmetatable({}, { __index = function() return function() end end })
end

describe("consent.keyword", function()
    local keyword

    setup(function()
        for _, name in ipairs(CORE_MODULES) do
            package.loaded[name] = nil
            package.preload[name] = inert
        end
        package.loaded["messaging.consent"] = nil
        keyword = require("messaging.consent").keyword
    end)

    teardown(function()
        for _, name in ipairs(CORE_MODULES) do
            package.preload[name] = nil
            package.loaded[name] = nil
        end
        package.loaded["messaging.consent"] = nil
        package.loaded["db"] = nil
    end)

    it("knows every word of the table, whatever the case, spaces and trailing punctuation", function()
        local words = {
            stop = { "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT", "OPTOUT" },
            start = { "START", "UNSTOP", "YES" },
            help = { "HELP", "INFO" },
        }
        for kind, list in pairs(words) do
            for _, w in ipairs(list) do
                for _, text in ipairs { w, w:lower(), "  " .. w .. "  ", w .. ".", w:lower() .. "!!!", "\t" .. w .. " ?\n",
                    w:sub(1, 1) .. w:sub(2):lower() .. "\u{2026}" } do
                    assert.equal(kind, (keyword(text)), ("%q"):format(text))
                end
            end
        end
        assert.equal("stop", (keyword("opt    out")))
        assert.equal("stop", (keyword("Opt\tOut!")))
    end)

    it("never takes a longer text for a keyword", function()
        for _, text in ipairs { "please stop texting me so often", "stop it", "STOP STOP", "OPTOUT NOW", "OP TOUT",
            "!STOP", "STOP\u{1F6D1}", "\u{1F6D1}STOP", "S T O P", "STOPP?", "", " ", "...", ("STOP "):rep(3),
            "help me", "yes please" } do
            local kind = keyword(text)
            assert.is_true(kind == nil or kind == "list", ("%q"):format(text))
            assert.is_not.equal("stop", kind)
        end
        assert.is_nil(keyword(("x"):rep(10000)))
        assert.is_nil(keyword((" "):rep(5000) .. "STOP"))
        assert.is_nil(keyword("STOP\u{1F6D1}"))
    end)

    it("offers a single word of letters and digits as a list's keyword, upper-case", function()
        assert.same({ "list", "YOUTH" }, { keyword(" youth! ") })
        assert.same({ "list", "CHOIR2026" }, { keyword("Choir2026") })
        assert.is_nil(keyword("a"))
        assert.is_nil(keyword(("A"):rep(21)))
        assert.is_nil(keyword("youth group"))
        assert.is_nil(keyword("café"))
    end)
end)
