-- lua/openapi.json against the router: every route the scripts register
-- (path and method) is documented, and the document names no other; the
-- document keeps to the JSON Schema subset of support.schema, its error
-- codes are those of errors.lua with their statuses, and GET /openapi.json
-- serves it as it is on disk.
--
-- app.lua is loaded as the core loads it, with the core's modules (steeple,
-- steeple.*) replaced by inert tables: loading the routes calls none of
-- them, and no handler here but /openapi.json's runs.
local cjson = require "cjson"
local conf = require "conf"
local schema = require "support.schema"

local DOC_PATH <const> = "lua/openapi.json"
local HTTP_METHODS <const> = {
    get = true, put = true, post = true, delete = true, options = true, head = true, patch = true, trace = true,
}
-- Responses of 400 and over whose JSON body is not the error body.
local NOT_ERROR_BODIES <const> = { ["GET /ready 503"] = true }
local CORE_MODULES <const> = {
    "steeple", "steeple.log", "steeple.metrics", "steeple.crypto", "steeple.db",
    "steeple.ratelimit", "steeple.spool", "steeple.http", "steeple.csv", "steeple.latch",
}

local function read(path)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    return text
end

-- A table whose every field is a function that does nothing.
local function inert()
    return setmetatable({}, { __index = function() return function() end end })
end

-- Loads app.lua (and with it every route module) as the core would.
local function load_app()
    for _, name in ipairs(CORE_MODULES) do
        package.loaded[name] = nil
        package.preload[name] = inert
    end
    package.loaded["steeple.config"] = conf.defaults()
    return require "app"
end

local function sorted(set)
    local list = {}
    for k in pairs(set) do list[#list + 1] = k end
    table.sort(list)
    return list
end

-- "METHOD /path" of every operation of the document.
local function documented(doc)
    local set = {}
    for path, item in pairs(doc.paths) do
        for key in pairs(item) do
            if HTTP_METHODS[key] then set[key:upper() .. " " .. path] = true end
        end
    end
    return set
end

-- "METHOD /path" of every route of the router.
local function routed(router)
    local set = {}
    for _, route in ipairs(router:routes()) do
        for _, method in ipairs(route.methods) do set[method .. " " .. route.pattern] = true end
    end
    return set
end

local function missing(from, set)
    local out = {}
    for k in pairs(from) do
        if not set[k] then out[#out + 1] = k end
    end
    table.sort(out)
    return out
end

-- Calls fn(method, path, operation, path_item) for every operation.
local function each_operation(doc, fn)
    for _, path in ipairs(sorted(doc.paths)) do
        local item = doc.paths[path]
        for _, key in ipairs(sorted(item)) do
            if HTTP_METHODS[key] then fn(key:upper(), path, item[key], item) end
        end
    end
end

-- The error codes an error response's schema allows: the enum at
-- error.code, found through "$ref" and allOf (the innermost enum wins).
local function error_codes(c, s)
    s = c:resolve(s)
    local codes
    for _, sub in ipairs(s.allOf or {}) do codes = error_codes(c, sub) or codes end
    local err = s.properties and s.properties.error and c:resolve(s.properties.error)
    local code = err and err.properties and err.properties.code and c:resolve(err.properties.code)
    if code and code.enum then codes = code.enum end
    return codes
end

describe("openapi.json", function()
    local text = read(DOC_PATH)
    local doc = cjson.decode(text)
    local c = schema.new(doc)
    local app

    setup(function() app = load_app() end)

    teardown(function()
        for _, name in ipairs(CORE_MODULES) do package.preload[name] = nil end
    end)

    it("is an OpenAPI 3.1.0 document", function()
        assert.equal("3.1.0", doc.openapi)
        assert.is_string(doc.info.title)
        assert.is_string(doc.info.version)
    end)

    it("documents every route of the router, and no route the router does not have", function()
        local docs, routes = documented(doc), routed(app.router)
        assert.same({ undocumented = {}, not_routed = {} },
            { undocumented = missing(routes, docs), not_routed = missing(docs, routes) })
        assert.truthy(routes["GET /openapi.json"])
    end)

    it("declares each path template parameter as a required path parameter, and no other", function()
        each_operation(doc, function(method, path, operation, item)
            local declared = {}
            for _, list in ipairs { item.parameters or {}, operation.parameters or {} } do
                for _, p in ipairs(list) do
                    p = c:resolve(p)
                    if p["in"] == "path" then
                        assert.is_true(p.required, method .. " " .. path .. ": {" .. p.name .. "} must be required")
                        declared[p.name] = true
                    end
                end
            end
            local in_template = {}
            for name in path:gmatch("{([^}]+)}") do in_template[name] = true end
            assert.same(sorted(in_template), sorted(declared), method .. " " .. path)
        end)
    end)

    it("resolves every $ref and keeps its schemas to the checked subset", function()
        assert.same({}, schema.problems(doc))
    end)

    it("has unique operation ids, and a 2xx answer and a security choice for every operation", function()
        local ids = {}
        each_operation(doc, function(method, path, operation)
            local where = method .. " " .. path
            assert.is_string(operation.operationId, where)
            assert.is_nil(ids[operation.operationId], where .. ": operationId used twice")
            ids[operation.operationId] = true
            local success = false
            for status in pairs(operation.responses) do
                if status:match("^2%d%d$") then success = true end
            end
            assert.is_true(success, where .. ": no 2xx response")
            local security = operation.security or doc.security
            assert.is_table(security, where)
            for _, requirement in ipairs(security) do
                for name in pairs(requirement) do
                    assert.is_table(doc.components.securitySchemes[name], where .. ": unknown scheme " .. name)
                end
            end
        end)
    end)

    it("names the error codes of errors.lua, each under its own status", function()
        local errors = require "errors"
        assert.same(sorted(errors.STATUS), sorted(
            (function()
                local set = {}
                for _, code in ipairs(doc.components.schemas.ErrorCode.enum) do set[code] = true end
                return set
            end)()))
        local checked = 0
        each_operation(doc, function(method, path, operation)
            for status, response in pairs(operation.responses) do
                response = c:resolve(response)
                local media = response.content and response.content["application/json"]
                local codes = media and error_codes(c, media.schema)
                if tonumber(status) >= 400 and media and not NOT_ERROR_BODIES[method .. " " .. path .. " " .. status] then
                    assert.is_table(codes, method .. " " .. path .. " " .. status .. ": no error codes")
                end
                for _, code in ipairs(codes or {}) do
                    checked = checked + 1
                    assert.equal(errors.STATUS[code], tonumber(status),
                        method .. " " .. path .. ": " .. code .. " documented under " .. status)
                end
            end
        end)
        assert.truthy(checked > 50)
    end)

    it("documents 401 on every operation that needs a bearer token", function()
        each_operation(doc, function(method, path, operation)
            local security = operation.security or doc.security
            for _, requirement in ipairs(security) do
                if requirement.bearerAuth then
                    assert.is_table(operation.responses["401"], method .. " " .. path)
                end
            end
        end)
    end)

    it("is what GET /openapi.json serves, as application/json", function()
        local handler = app.router:match("GET", "/openapi.json")
        local res = handler({})
        assert.equal(200, res.status)
        assert.equal(text, res.body)
        assert.matches("^application/json", res.headers["Content-Type"])
    end)
end)

describe("support.schema", function()
    local doc = {
        components = { schemas = {
            Thing = {
                type = "object", required = { "id", "tags" },
                properties = {
                    id = { type = "integer", minimum = 1 },
                    name = { type = { "string", "null" }, maxLength = 3 },
                    kind = { type = "string", enum = { "a", "b" } },
                    tags = { type = "array", maxItems = 2, items = { type = "string" } },
                    extra = { type = "object", additionalProperties = { type = "string" } },
                },
            },
            Named = { allOf = { { ["$ref"] = "#/components/schemas/Thing" }, { required = { "name" } } } },
        } },
    }
    local c = schema.new(doc)
    local thing = { ["$ref"] = "#/components/schemas/Thing" }

    it("accepts a value that fits, empty arrays and integral floats included", function()
        assert.is_true(c:check({ id = 1.0, tags = {}, name = cjson.null, kind = "a", extra = { x = "y" } }, thing))
    end)

    it("names each misfit", function()
        local ok, errs = c:check({ id = 0.5, name = "long", kind = "c", tags = { 1, "a", "b" }, extra = { x = 1 } },
            thing)
        assert.is_false(ok)
        table.sort(errs)
        assert.same({
            "$.extra.x: 1 is not of type string",
            "$.id: 0.5 is not of type integer",
            "$.kind: \"c\" is not in the enum",
            "$.name: longer than 3",
            "$.tags: more than 2 items",
            "$.tags[0]: 1 is not of type string",
        }, errs)
    end)

    it("applies every schema of allOf, and knows missing properties and wrong types", function()
        local ok, errs = c:check({ id = 2, tags = {} }, { ["$ref"] = "#/components/schemas/Named" })
        assert.is_false(ok)
        assert.same({ '$: required property "name" is missing' }, errs)
        ok, errs = c:check("text", thing)
        assert.is_false(ok)
        assert.same({ '$: "text" is not of type object' }, errs)
    end)

    it("finds unresolved references and keywords outside the subset", function()
        local bad = { components = { schemas = {
            A = { type = "object", properties = { b = { ["$ref"] = "#/components/schemas/B" } } },
            C = { oneOf = { { type = "string" } } },
        } } }
        assert.same({
            "#/components/schemas/A/properties/b: unresolved $ref #/components/schemas/B",
            "#/components/schemas/C: keyword oneOf is outside the subset",
        }, schema.problems(bad))
    end)
end)
