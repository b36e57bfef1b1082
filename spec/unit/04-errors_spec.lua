local errors = require "errors"
local cjson = require "cjson"

local ALL_STATUS = {
    validation_failed = 400,
    invalid_json = 400,
    unauthorized = 401,
    invalid_credentials = 401,
    invalid_signature = 401,
    forbidden = 403,
    not_found = 404,
    method_not_allowed = 405,
    email_taken = 409,
    phone_taken = 409,
    contact_exists = 409,
    keyword_taken = 409,
    opted_out = 409,
    invalid_state = 409,
    payload_too_large = 413,
    unsupported_media_type = 415,
    account_locked = 429,
    rate_limited = 429,
    internal_error = 500,
    service_unavailable = 503,
    tenant_unavailable = 503,
}

local JSON_TYPE = "application/json; charset=utf-8"

-- Sorted keys of t.
local function keys(t)
    local list = {}
    for k in pairs(t) do list[#list + 1] = k end
    table.sort(list)
    return list
end

describe("errors", function()
    it("maps every code of the API to its status", function()
        assert.same(ALL_STATUS, errors.STATUS)
    end)

    it("has a generic message for every code", function()
        assert.same(keys(ALL_STATUS), keys(errors.MESSAGES))
        for code, message in pairs(errors.MESSAGES) do
            assert.is_string(message, code)
            assert.truthy(#message > 3, code)
            assert.truthy(message:find("%.$"), code)
        end
    end)

    it("uses messages that reveal no internals", function()
        for code, message in pairs(errors.MESSAGES) do
            local m = message:lower()
            for _, word in ipairs({ "sql", "database", "postgres", "registry", "stack", "traceback", "lua", "host" }) do
                assert.is_nil(m:find(word, 1, true), code .. ": " .. word)
            end
        end
    end)

    it("is not affected by changes to the exported tables", function()
        local saved = errors.STATUS.not_found
        errors.STATUS.not_found = 200
        local res = errors.response("r", "not_found")
        errors.STATUS.not_found = saved
        assert.equal(404, res.status)
    end)

    describe("response", function()
        for code, status in pairs(ALL_STATUS) do
            it("builds the body for " .. code, function()
                local res = errors.response("req-1", code)
                assert.equal(status, res.status)
                assert.same({ ["content-type"] = JSON_TYPE }, res.headers)
                local body = cjson.decode(res.body)
                local expected = { error = { code = code, message = errors.MESSAGES[code], requestId = "req-1" } }
                if code == "validation_failed" then expected.error.fields = {} end
                assert.same(expected, body)
            end)
        end

        it("writes the fields in a fixed order", function()
            assert.equal('{"error":{"code":"not_found","message":"Not found.","requestId":"abc"}}',
                errors.response("abc", "not_found").body)
        end)

        it("carries fields for validation_failed", function()
            local res = errors.response("r2", "validation_failed", {
                fields = { email = "must be a valid email address", password = "must be 10-128 characters" },
            })
            assert.equal(400, res.status)
            assert.same({ error = {
                code = "validation_failed", message = errors.MESSAGES.validation_failed, requestId = "r2",
                fields = { email = "must be a valid email address", password = "must be 10-128 characters" },
            } }, cjson.decode(res.body))
            assert.truthy(res.body:find('"fields":{"email":"must be a valid email address","password":', 1, true))
        end)

        it("writes an empty fields object when validation_failed has none", function()
            assert.truthy(errors.response("r", "validation_failed").body:find('"fields":{}', 1, true))
        end)

        it("never carries fields for other codes", function()
            for code in pairs(ALL_STATUS) do
                if code ~= "validation_failed" then
                    local res = errors.response("r", code, { fields = { email = "bad" } })
                    assert.same({ "code", "message", "requestId" }, keys(cjson.decode(res.body).error))
                    assert.is_nil(res.body:find("fields", 1, true))
                end
            end
        end)

        it("lets opts.message replace the generic message", function()
            local res = errors.response("r", "invalid_json", { message = "Expected a JSON object." })
            assert.equal("Expected a JSON object.", cjson.decode(res.body).error.message)
        end)

        it("adds headers with lower-case names", function()
            local res = errors.response("r", "method_not_allowed", { headers = { Allow = "GET, POST" } })
            assert.same({ ["content-type"] = JSON_TYPE, allow = "GET, POST" }, res.headers)
            res = errors.response("r", "rate_limited", { headers = { ["Retry-After"] = 30 } })
            assert.same({ ["content-type"] = JSON_TYPE, ["retry-after"] = "30" }, res.headers)
            res = errors.response("r", "service_unavailable", { headers = { ["Retry-After"] = 5.0 } })
            assert.equal("5", res.headers["retry-after"])
        end)

        it("keeps the JSON content type", function()
            local res = errors.response("r", "not_found", { headers = { ["Content-Type"] = "text/html" } })
            assert.same({ ["content-type"] = JSON_TYPE }, res.headers)
        end)

        it("escapes the request id and message", function()
            local res = errors.response('a"b\\c\n', "forbidden", { message = 'say "no"' })
            local e = cjson.decode(res.body).error
            assert.equal('a"b\\c\n', e.requestId)
            assert.equal('say "no"', e.message)
        end)

        it("raises on misuse", function()
            assert.has_error(function() errors.response("r", "teapot") end)
            assert.has_error(function() errors.response("r", nil) end)
            assert.has_error(function() errors.response(nil, "not_found") end)
            assert.has_error(function() errors.response("r", "not_found", { message = 42 }) end)
            assert.has_error(function() errors.response("r", "not_found", { headers = "Allow: GET" }) end)
            assert.has_error(function() errors.response("r", "not_found", { headers = { Allow = {} } }) end)
            assert.has_error(function() errors.response("r", "validation_failed", { fields = "email" }) end)
            assert.has_error(function() errors.response("r", "validation_failed", { fields = { "bad" } }) end)
        end)
    end)

    describe("raise", function()
        it("raises a value that errors.is recognises", function()
            local ok, err = pcall(errors.raise, "forbidden")
            assert.is_false(ok)
            assert.is_true(errors.is(err))
            assert.equal("forbidden", err.code)
        end)

        it("raises a plain error for an unknown code", function()
            local ok, err = pcall(errors.raise, "teapot")
            assert.is_false(ok)
            assert.is_string(err)
            assert.is_false(errors.is(err))
        end)

        it("has a readable string form", function()
            local _, err = pcall(errors.raise, "not_found")
            assert.equal("api error: not_found", tostring(err))
        end)

        it("is not fooled by look-alikes", function()
            assert.is_false(errors.is({ code = "not_found" }))
            assert.is_false(errors.is("not_found"))
            assert.is_false(errors.is(nil))
            assert.is_false(errors.is(setmetatable({ code = "not_found" }, { __name = "steeple.error" })))
        end)
    end)

    describe("to_response", function()
        it("turns a raised error into its response, options included", function()
            local _, err = pcall(errors.raise, "rate_limited", { headers = { ["Retry-After"] = 12 } })
            local res = errors.to_response("r9", err)
            assert.equal(429, res.status)
            assert.equal("12", res.headers["retry-after"])
            assert.same({ error = { code = "rate_limited", message = errors.MESSAGES.rate_limited, requestId = "r9" } },
                cjson.decode(res.body))
        end)

        it("keeps validation fields", function()
            local fields = { limit = "must be between 1 and 100" }
            local _, err = pcall(errors.raise, "validation_failed", { fields = fields })
            assert.same({ limit = "must be between 1 and 100" },
                cjson.decode(errors.to_response("r", err).body).error.fields)
        end)

        it("turns anything else into a generic internal_error", function()
            for _, err in ipairs({ "db.lua:12: relation \"x\" does not exist", { code = "not_found" }, 42 }) do
                local res = errors.to_response("r5", err)
                assert.equal(500, res.status)
                assert.same({ error = { code = "internal_error", message = errors.MESSAGES.internal_error,
                    requestId = "r5" } }, cjson.decode(res.body))
            end
            local _, err = pcall(error, "boom")
            assert.equal(500, errors.to_response("r", err).status)
        end)
    end)
end)
