local merge = require "broadcasts.merge"

describe("broadcast merge fields", function()
    it("renders fields and fallbacks", function()
        local t = assert(merge.parse("Hi {{firstName|friend}} {{lastName}}, from {{churchName}}!"))
        assert.equal("Hi Ann Lee, from Grace!", merge.render(t, { firstName = "Ann", lastName = "Lee", churchName = "Grace" }))
        assert.equal("Hi friend , from Grace!", merge.render(t, { firstName = "", churchName = "Grace" }))
    end)

    it("keeps text without fields as it is", function()
        local t = assert(merge.parse("Service at 10 {not a field} }} here"))
        assert.equal("Service at 10 {not a field} }} here", merge.render(t, {}))
        assert.same({}, assert(merge.parse("")))
    end)

    it("allows spaces inside the braces", function()
        local t = assert(merge.parse("{{ firstName | dear }}"))
        assert.equal(" dear ", merge.render(t, {}))
        assert.equal("Bo", merge.render(t, { firstName = "Bo" }))
    end)

    it("refuses unknown fields, unclosed braces and bad fallbacks", function()
        for _, text in ipairs { "Hi {{name}}", "{{firstname}}", "{{}}", "{{firstName", "a {{lastName x}}",
                                "{{firstName|a|b}}", "{{firstName|{x}}}", "{{1}}" } do
            local t, err = merge.parse(text)
            assert.is_nil(t, text)
            assert.is_string(err, text)
        end
    end)

    it("bounds the rendered length in characters", function()
        local t = assert(merge.parse("Hé {{firstName|friend}} {{churchName}}"))
        local least, most = merge.bounds(t, { churchName = "Grâce" }, { firstName = 100, lastName = 100 })
        assert.equal(3 + 6 + 1 + 5, least)
        assert.equal(3 + 100 + 1 + 5, most)
        local only = assert(merge.parse("{{firstName}}{{lastName}}"))
        least, most = merge.bounds(only, {}, { firstName = 100, lastName = 100 })
        assert.equal(0, least)
        assert.equal(200, most)
    end)
end)
