local json = require "json"
local cjson = require "cjson"

describe("json", function()
    local codec = json.new(64)

    -- Asserts that body is refused as invalid_json.
    local function refused(body, c)
        local value, code = (c or codec).decode_object(body)
        assert.is_nil(value)
        assert.equal("invalid_json", code)
    end

    describe("decode_object", function()
        it("decodes an object", function()
            local t = assert(codec.decode_object('{"text":"hi","mediaUrls":["https://x/1"],"n":{"m":true}}'))
            assert.same({ text = "hi", mediaUrls = { "https://x/1" }, n = { m = true } }, t)
        end)

        it("accepts surrounding whitespace and an empty object", function()
            assert.same({}, codec.decode_object(" \t\r\n{}\n "))
            assert.same({ a = 1 }, codec.decode_object('{ "a" : 1 }'))
        end)

        it("represents null as json.null", function()
            local t = assert(codec.decode_object('{"a":null,"b":[null]}'))
            assert.equal(json.null, t.a)
            assert.equal(json.null, t.b[1])
            assert.equal(cjson.null, json.null)
        end)

        it("decodes numbers to equal values", function()
            local t = assert(codec.decode_object('{"a":1,"b":-2.5,"c":1e3}'))
            assert.equal(1, t.a)
            assert.equal(1, math.tointeger(t.a))
            assert.equal(-2.5, t.b)
            assert.equal(1000, t.c)
        end)

        it("accepts multi-byte UTF-8 text and escapes", function()
            local t = assert(codec.decode_object('{"a":"Grâce ✝ 😀","b":"\\u00e2\\ud83d\\ude00"}'))
            assert.equal("Grâce ✝ 😀", t.a)
            assert.equal("â😀", t.b)
        end)

        it("refuses an empty or missing body", function()
            refused("")
            refused(nil)
            refused("   ")
        end)

        it("raises on a body that is not a string", function()
            assert.has_error(function() codec.decode_object(42) end)
            assert.has_error(function() codec.decode_object({}) end)
        end)

        local malformed = {
            "{", "}", '{"a":}', "{'a':1}", '{"a":1,}', '{"a" 1}', '{a:1}', "{} x", "{}{}",
            '{"a":1}}', '{"a":tru}', '{"a":"unterminated}', '{"a":01}', '{"a":"\\x41"}',
        }
        for _, body in ipairs(malformed) do
            it("refuses malformed JSON " .. body, function() refused(body) end)
        end

        local not_objects = { "[]", '[{"a":1}]', '"text"', "42", "-1", "true", "false", "null", " [1]" }
        for _, body in ipairs(not_objects) do
            it("refuses the top-level value " .. body, function() refused(body) end)
        end

        local bad_utf8 = {
            { '{"a":"\xff"}', "a 0xff byte" },
            { '{"a":"\xc0\xaf"}', "an overlong encoding" },
            { '{"a":"\xed\xa0\x80"}', "an encoded surrogate" },
            { '{"a":"\xe2\x82"}', "a truncated sequence" },
            { '{"\x80":1}', "a stray continuation byte in a key" },
            { '{"a":"\xf4\x90\x80\x80"}', "a code point above U+10FFFF" },
        }
        for _, case in ipairs(bad_utf8) do
            it("refuses invalid UTF-8: " .. case[2], function() refused(case[1]) end)
        end

        it("refuses lone surrogate escapes", function()
            refused('{"a":"\\ud800"}')
            refused('{"a":"\\udc00"}')
        end)

        it("refuses NUL bytes anywhere", function()
            refused('{"a":"x\0y"}')
            refused('{"a":1}\0')
            refused('{"a":1}\0garbage')
            refused('\0{"a":1}')
        end)

        it("refuses the escape \\u0000 (a NUL once decoded), not an escaped backslash before u0000", function()
            refused('{"a":"x\\u0000y"}')
            refused('{"a":["ok",{"b":"\\u0000"}]}')
            refused('{"\\u0000":1}')
            refused('{"a":"\\\\\\u0000"}')
            assert.same({ a = "\\u0000" }, codec.decode_object('{"a":"\\\\u0000"}'))
        end)

        it("refuses numbers too large for a double, wherever they are", function()
            refused('{"a":1e999}')
            refused('{"a":[1,2,{"b":-1e400}]}')
            refused('{"a":' .. string.rep("9", 400) .. '}')
            assert.same({ a = 0, b = -1e308 }, codec.decode_object('{"a":1e-400,"b":-1e308}'))
        end)

        it("accepts other raw control bytes inside strings, like their escapes", function()
            assert.same({ a = "x\1y" }, codec.decode_object('{"a":"x\1y"}'))
            assert.same(codec.decode_object('{"a":"\\u001b"}'), codec.decode_object('{"a":"\27"}'))
        end)

        local numbers = { "NaN", "-NaN", "Infinity", "-Infinity", "inf", "0x10", "nan" }
        for _, n in ipairs(numbers) do
            it("refuses the number " .. n, function() refused('{"a":' .. n .. '}') end)
        end

        it("gives a reason for logs as a third value", function()
            local _, _, reason = codec.decode_object('{"a":1,"a":2}')
            assert.equal("duplicate key", reason)
            _, _, reason = codec.decode_object("")
            assert.equal("empty body", reason)
        end)
    end)

    describe("nesting", function()
        local function nested_objects(n)
            return string.rep('{"a":', n - 1) .. "{}" .. string.rep("}", n - 1)
        end

        it("accepts exactly max_depth levels", function()
            local c = json.new(3)
            assert.is_table(c.decode_object(nested_objects(3)))
            assert.is_table(c.decode_object('{"a":[{"b":1}]}'))
            refused(nested_objects(4), c)
            assert.is_table(c.decode_object('{"a":[[1]]}'))
            refused('{"a":[[[1]]]}', c)
            refused('{"a":[{"b":[]}]}', c)
        end)

        it("defaults to 64 levels", function()
            local c = json.new()
            assert.is_table(c.decode_object(nested_objects(64)))
            refused(nested_objects(65), c)
        end)

        it("refuses 10,000 levels of objects or arrays without crashing", function()
            refused(nested_objects(10000))
            refused('{"a":' .. string.rep("[", 10000) .. string.rep("]", 10000) .. "}")
            refused('{"a":' .. string.rep("[", 10000))
        end)

        it("keeps the depth of each codec separate", function()
            local shallow, deep = json.new(2), json.new(10)
            refused(nested_objects(5), shallow)
            assert.is_table(deep.decode_object(nested_objects(5)))
            refused(nested_objects(5), shallow)
        end)

        it("raises on a bad max_depth", function()
            assert.has_error(function() json.new(0) end)
            assert.has_error(function() json.new(1.5) end)
            assert.has_error(function() json.new("64") end)
        end)
    end)

    describe("duplicate keys", function()
        local duplicates = {
            '{"a":1,"a":2}',
            '{"a":1,"b":2,"a":3}',
            '{"a":1, "a" :1}',
            '{ "a" \t:\n1 ,\r\n "a"\n: 2 }',
            '{"a":":","a":":"}',
            '{"x":{"a":1,"a":2}}',
            '{"x":{"y":{"z":[1,{"a":1,"b":2,"a":3}]}}}',
            '{"list":[{"a":1},{"b":1,"b":2}]}',
            '{"list":[[{"k":1,"k":1}]]}',
            '{"a":1,"\\u0061":2}',
            '{"\\u00e2":1,"â":2}',
            '{"a\\"b":1,"a\\"b":2}',
            '{"a\\\\":1,"a\\u005c":2}',
            '{"\\/":1,"/":2}',
            '{"":1,"":2}',
            '{"s":"}{,\\"s\\":","k":1,"k":2}',
        }
        for _, body in ipairs(duplicates) do
            it("refuses " .. body, function() refused(body) end)
        end

        local distinct = {
            { '{"a":1,"b":2}', { a = 1, b = 2 } },
            { '{"a":{"a":1},"b":{"a":2}}', { a = { a = 1 }, b = { a = 2 } } },
            { '{"list":[{"a":1},{"a":2}]}', { list = { { a = 1 }, { a = 2 } } } },
            { '{"a":"a","b":"a"}', { a = "a", b = "a" } },
            { '{"a":["a","a"],"b":1}', { a = { "a", "a" }, b = 1 } },
            { '{"a\\\\":1,"a":2}', { ["a\\"] = 1, a = 2 } },
            { '{"s":"}{,\\"s\\":","t":"[\\\\","s2":1}', { s = '}{,"s":', t = "[\\", s2 = 1 } },
            { '{"A":1,"a":2}', { A = 1, a = 2 } },
            { '{"a":":)","b":" :x","c":"q\\":"}', { a = ":)", b = " :x", c = 'q":' } },
            { '{"a":"\\":","\\"":":"}', { a = '":', ['"'] = ":" } },
            { '{"a":[":",":"],"b":{"c":":"}}', { a = { ":", ":" }, b = { c = ":" } } },
            { '{"x":{"a":1},"a":2}', { x = { a = 1 }, a = 2 } },
        }
        for _, case in ipairs(distinct) do
            it("accepts " .. case[1], function()
                assert.same(case[2], codec.decode_object(case[1]))
            end)
        end

        it("checks a large object in one pass", function()
            local parts = {}
            for i = 1, 20000 do parts[i] = string.format('"k%d":[{"v":"%d,\\"k%d\\""}]', i, i, i) end
            local body = "{" .. table.concat(parts, ",") .. "}"
            local t = assert(codec.decode_object(body))
            assert.equal('20000,"k20000"', t.k20000[1].v)
            refused(body:sub(1, -2) .. ',"k1":0}')
        end)
    end)

    describe("encode", function()
        it("round-trips values", function()
            local value = { a = "x", b = { 1, 2, 3 }, c = { d = true }, e = json.null }
            local text = codec.encode(value)
            assert.is_string(text)
            assert.same(value, codec.decode_object(text))
        end)

        it("encodes json.empty_array as []", function()
            assert.equal('{"a":[]}', codec.encode({ a = json.empty_array }))
            assert.equal('[[],"x",[]]', codec.encode({ json.empty_array, "x", json.empty_array }))
            assert.equal("[]", codec.encode(json.empty_array))
        end)

        it("does not let json.empty_array be filled", function()
            if type(json.empty_array) == "table" and cjson.empty_array_mt == nil then
                assert.has_error(function() json.empty_array[1] = 1 end)
            end
            assert.equal("[]", codec.encode(json.empty_array))
        end)

        it("encodes empty tables as objects", function()
            assert.equal('{"a":{}}', codec.encode({ a = {} }))
        end)

        it("leaves strings that look like its internals alone", function()
            local tricky = {
                "\1steeple.empty_array\1",
                "\1steeple.empty_array.1\1",
                '["\\u0001steeple.empty_array\\u0001"]',
            }
            for _, s in ipairs(tricky) do
                local text = codec.encode({ a = { s }, b = json.empty_array })
                local back = cjson.decode(text)
                assert.same({ s }, back.a)
                assert.same({}, back.b)
                assert.truthy(text:find('"b":[]', 1, true))
            end
        end)

        it("keeps json.empty_array empty, also after a failed encode", function()
            assert.has_error(function() codec.encode({ json.empty_array, print }) end)
            assert.is_nil(next(json.empty_array))
            assert.equal("[]", codec.encode(json.empty_array))
        end)

        it("raises on values JSON cannot carry", function()
            assert.has_error(function() codec.encode({ f = print }) end)
            assert.has_error(function() codec.encode(0 / 0) end)
            assert.has_error(function() codec.encode({ a = math.huge }) end)
            assert.has_error(function() codec.encode({ [1] = 1, [1000] = 2 }) end)
        end)

        it("raises on values nested deeper than max_depth", function()
            local c = json.new(2)
            assert.equal('{"a":{}}', c.encode({ a = {} }))
            assert.has_error(function() c.encode({ a = { b = {} } }) end)
        end)

        it("escapes strings", function()
            local text = codec.encode({ s = 'q"b\\n\n\1' })
            assert.same({ s = 'q"b\\n\n\1' }, cjson.decode(text))
        end)
    end)
end)
