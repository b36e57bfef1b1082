local v = require "validate"
local errors = require "errors"
local json = require "json"

describe("validate", function()
    local signup = v.object {
        name = v.text { min = 2, max = 5 },
        email = v.email(),
        password = v.password { min = 3, max = 4 },
        phone = v.phone { optional = true },
        role = v.one_of { values = { "admin", "owner" }, default = "admin" },
    }

    local function fields(t)
        local out, f = signup:check(t)
        assert.is_nil(out)
        return f
    end

    it("returns the cleaned values", function()
        assert.same({ name = "Ab", email = "x@example.org", password = " pw ", role = "admin" },
            signup:check { name = "  Ab ", email = " X@Example.ORG ", password = " pw ", extra = 1 })
        assert.same({ name = "Abc", email = "x@example.org", password = "pwd", phone = "+12345678", role = "owner" },
            signup:check { name = "Abc", email = "x@example.org", password = "pwd", phone = "+12345678", role = "owner" })
    end)

    it("names every missing field; null counts as missing", function()
        assert.same({ name = "is required", email = "is required", password = "is required" }, fields {})
        assert.same({ name = "is required" }, fields { name = json.null, email = "a@b.org", password = "pwd" })
    end)

    it("checks types, lengths in characters, encoding and control characters", function()
        assert.same({ name = "must be a string", email = "must be a string", password = "must be a string",
            phone = "must be a string" }, fields { name = 1, email = {}, password = true, phone = 5 })
        assert.same({ name = "must be 2 to 5 characters" }, fields { name = "A", email = "a@b.org", password = "pwd" })
        assert.same({ name = "must be 2 to 5 characters" }, fields { name = "Abcdef", email = "a@b.org", password = "pwd" })
        assert.is_table(signup:check { name = "ééééé", email = "a@b.org", password = "pwd" }) -- 10 bytes, 5 characters
        assert.same({ name = "must be valid UTF-8" }, fields { name = "A\xff", email = "a@b.org", password = "pwd" })
        assert.same({ name = "must not contain control characters" },
            fields { name = "A\0b", email = "a@b.org", password = "pwd" })
        assert.same({ password = "must not contain control characters" },
            fields { name = "Ab", email = "a@b.org", password = "p\nw" })
        assert.same({ password = "must be 3 to 4 characters" }, fields { name = "Ab", email = "a@b.org", password = "pwdxy" })
    end)

    it("accepts and refuses emails", function()
        for _, good in ipairs { "a@b.org", "first.last+tag@sub.example.co.uk", "o'brien@example.ie", "x_y-z@a-b.io" } do
            assert.is_true(v.is_email(good), good)
        end
        for _, bad in ipairs { "", "a", "a@", "@b.org", "a@b", "a@@b.org", "a b@c.org", "a@b .org", ".a@b.org",
            "a.@b.org", "a..b@c.org", "a@-b.org", "a@b-.org", "a@b..org", "a@b.c0m", "é@b.org", "a@b.org.",
            ("a"):rep(65) .. "@b.org", "a@" .. ("b"):rep(64) .. ".org" } do
            assert.is_false(v.is_email(bad), bad)
        end
        assert.same({ email = "must not contain control characters" },
            fields { name = "Ab", email = "a\t@b.org", password = "pwd" })
    end)

    it("accepts E.164 phone numbers only", function()
        for _, bad in ipairs { "12345678", "+1234567", "+1234567890123456", "+1 2345678", "+1234567a", "" } do
            assert.same({ phone = "must be a phone number in E.164 form (+ and 8 to 15 digits)" },
                fields { name = "Ab", email = "a@b.org", password = "pwd", phone = bad }, bad)
        end
    end)

    it("checks a list of values", function()
        assert.same({ role = "must be one of: admin, owner" },
            fields { name = "Ab", email = "a@b.org", password = "pwd", role = "root" })
    end)

    it("trims what %s matches, as the pattern ^%s*(.-)%s*$ does", function()
        local pieces = { " ", "\t", "\n", "\r", "\v", "\f", "a", "b", "\0", "é" }
        math.randomseed(20)
        for _ = 1, 20000 do
            local parts = {}
            for j = 1, math.random(0, 10) do parts[j] = pieces[math.random(#pieces)] end
            local s = table.concat(parts)
            assert.equal(s:match("^%s*(.-)%s*$"), v.trim(s), string.format("%q", s))
        end
        assert.equal("a  b", v.trim("a" .. "  " .. "b"))
        assert.equal("a" .. (" "):rep(1000000) .. "b", v.trim(" a" .. (" "):rep(1000000) .. "b\n"))
    end)

    it("refuses values longer than a rule allows before reading them", function()
        local long = "a" .. (" "):rep(1024 * 1024) .. "b"
        assert.same({ name = "must be 2 to 5 characters", email = "must be a valid email address",
            password = "must be 3 to 4 characters", phone = "must be a phone number in E.164 form (+ and 8 to 15 digits)" },
            fields { name = long, email = long .. "@b.org", password = long, phone = "+" .. ("1"):rep(1024 * 1024) })
        -- white space around a value is trimmed, up to a bound
        local padded = (" "):rep(500)
        assert.same({ name = "Ab", email = "a@b.org", password = "pwd", role = "admin" },
            signup:check { name = padded .. "Ab" .. padded, email = padded .. "a@b.org" .. padded, password = "pwd" })
        assert.same({ name = "must be 2 to 5 characters" },
            fields { name = (" "):rep(2000) .. "Ab", email = "a@b.org", password = "pwd" })
        assert.same({ email = "must be a valid email address" },
            fields { name = "Ab", email = (" "):rep(2000) .. "a@b.org", password = "pwd" })
        -- 4 bytes a character: the longest text of max characters still fits
        assert.is_table(signup:check { name = ("😀"):rep(5), email = "a@b.org", password = ("😀"):rep(4) })
    end)

    it("raises validation_failed with the fields when called", function()
        local ok, e = pcall(signup, {})
        assert.is_false(ok)
        assert.is_true(errors.is(e))
        assert.equal("validation_failed", e.code)
        assert.equal("is required", e.opts.fields.email)
    end)
    describe("arrays, URLs and ids", function()
        local message = v.object {
            text = v.text { min = 0, max = 5, keep_space = true, controls = true, default = "",
                message = "must be at most 5 characters" },
            urls = v.array { of = v.url { max = 30 }, max = 2, optional = true,
                message = "must be an array of at most 2 URLs", item_message = "must hold http(s) URLs" },
            ids = v.array { of = v.id(), max = 3, optional = true },
        }
        local ID <const> = "0f8fad5b-d9cb-469f-a165-70867728950e"

        it("cleans them, keeping text as given and repeated items once", function()
            assert.same({ text = " a\nb ", urls = { "https://x.example/a", "HTTP://y" }, ids = { ID } },
                message:check { text = " a\nb ", urls = { "https://x.example/a", "HTTP://y" },
                    ids = { ID, ID:upper() } })
            assert.same({ text = "", urls = {}, ids = {} }, message:check { urls = {}, ids = {} })
            assert.same({ text = "" }, message:check { text = json.null })
        end)

        it("reports every bad field at once", function()
            local out, bad = message:check { text = "toolong", urls = "https://x.example", ids = { "nope" } }
            assert.is_nil(out)
            assert.same({ text = "must be at most 5 characters", urls = "must be an array of at most 2 URLs",
                ids = "item 1 must be an id" }, bad)
        end)

        it("refuses objects, sparse tables, long arrays and bad items", function()
            local bad = {
                { urls = { a = "https://x" } }, { urls = { [2] = "https://x" } },
                { urls = { "https://a", "https://b", "https://c" } }, { urls = { "ftp://x" } },
                { urls = { "https://a b" } }, { urls = { "https://" .. ("a"):rep(30) } }, { urls = { 5 } },
                { urls = { json.null } }, { urls = { "https://x\1y" } }, { urls = 7 },
            }
            for i, t in ipairs(bad) do
                local out, bad_fields = message:check(t)
                assert.is_nil(out, i)
                assert.is_string(bad_fields.urls, i)
            end
            local many = {}
            for i = 1, 100000 do many[i] = "https://x" end
            assert.same({ urls = "must be an array of at most 2 URLs" }, select(2, message:check { urls = many }))
        end)

        it("takes ids in the UUID text form only", function()
            for _, bad in ipairs { "", "0f8fad5b", ID .. "0", " " .. ID, ID:gsub("-", ""), 42 } do
                assert.same({ ids = "item 1 must be an id" }, select(2, message:check { ids = { bad } }), tostring(bad))
            end
        end)
    end)
end)
