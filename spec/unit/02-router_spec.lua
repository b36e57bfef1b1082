local router = require "router"

-- A handler that can be told apart from the others by its name.
local function handler(name)
    return function() return name end
end

-- Builds a router from a list of { pattern, { METHOD = name, ... } }.
local function build(list)
    local r = router.new()
    for _, item in ipairs(list) do
        local methods = {}
        for method, name in pairs(item[2]) do methods[method] = handler(name) end
        r:add(item[1], methods)
    end
    return r
end

-- match() with the handler replaced by the name it returns.
local function match(r, method, path)
    local h, a, b = r:match(method, path)
    if h then return h(), a, b end
    return h, a, b
end

describe("router", function()
    describe("match", function()
        local r = build({
            { "/", { GET = "root" } },
            { "/health", { GET = "health" } },
            { "/api/conversations", { GET = "conversations" } },
            { "/api/conversations/{id}/messages", { GET = "list", POST = "send" } },
            { "/api/admins", { POST = "create_admin" } },
            { "/api/admins/{id}", { GET = "admin", DELETE = "delete_admin" } },
            { "/api/admins/me", { GET = "me" } },
            { "/t/{a}/x/{b}", { GET = "two" } },
        })

        it("finds literal routes", function()
            assert.same({ "health", {}, "/health" }, { match(r, "GET", "/health") })
            assert.same({ "conversations", {}, "/api/conversations" }, { match(r, "GET", "/api/conversations") })
        end)

        it("finds the root route", function()
            assert.same({ "root", {}, "/" }, { match(r, "GET", "/") })
        end)

        it("returns parameters by name", function()
            assert.same({ "send", { id = "c-42" }, "/api/conversations/{id}/messages" },
                { match(r, "POST", "/api/conversations/c-42/messages") })
            assert.same({ "two", { a = "1", b = "2" }, "/t/{a}/x/{b}" }, { match(r, "GET", "/t/1/x/2") })
        end)

        it("returns parameters raw, without percent-decoding", function()
            local _, params = r:match("GET", "/api/conversations/a%20b%2Fc/messages")
            assert.same({ id = "a%20b%2Fc" }, params)
        end)

        it("returns a fresh params table each time", function()
            local _, p1 = r:match("GET", "/health")
            local _, p2 = r:match("GET", "/health")
            assert.are_not.equal(p1, p2)
        end)

        it("prefers a literal segment over a parameter", function()
            assert.same({ "me", {}, "/api/admins/me" }, { match(r, "GET", "/api/admins/me") })
            assert.same({ "admin", { id = "a1" }, "/api/admins/{id}" }, { match(r, "GET", "/api/admins/a1") })
        end)

        it("prefers the literal regardless of registration order", function()
            local r2 = build({
                { "/x/{id}", { GET = "param" } },
                { "/x/me", { GET = "literal" } },
            })
            assert.equal("literal", (match(r2, "GET", "/x/me")))
            assert.equal("param", (match(r2, "GET", "/x/you")))
        end)

        it("falls back to a parameter when the literal branch leads nowhere", function()
            local r2 = build({
                { "/a/me/x", { GET = "literal" } },
                { "/a/{id}/y", { GET = "param" } },
            })
            assert.same({ "literal", {}, "/a/me/x" }, { match(r2, "GET", "/a/me/x") })
            assert.same({ "param", { id = "me" }, "/a/{id}/y" }, { match(r2, "GET", "/a/me/y") })
        end)

        it("uses the parameter route for a method the literal route lacks", function()
            assert.same({ "delete_admin", { id = "me" }, "/api/admins/{id}" }, { match(r, "DELETE", "/api/admins/me") })
        end)

        it("keeps parameter names per pattern when patterns share a prefix", function()
            local r2 = build({
                { "/a/{x}/b", { GET = "b" } },
                { "/a/{y}/c", { GET = "c" } },
            })
            assert.same({ "b", { x = "1" }, "/a/{x}/b" }, { match(r2, "GET", "/a/1/b") })
            assert.same({ "c", { y = "2" }, "/a/{y}/c" }, { match(r2, "GET", "/a/2/c") })
        end)

        it("does not keep values from a branch that failed", function()
            local r2 = build({
                { "/a/{p}/{q}/z", { GET = "deep" } },
                { "/a/k/{r}", { GET = "short" } },
            })
            assert.same({ "deep", { p = "k", q = "m" }, "/a/{p}/{q}/z" }, { match(r2, "GET", "/a/k/m/z") })
            assert.same({ "short", { r = "m" }, "/a/k/{r}" }, { match(r2, "GET", "/a/k/m") })
        end)
    end)

    describe("not_found", function()
        local r = build({
            { "/health", { GET = "health" } },
            { "/api/conversations/{id}/messages", { GET = "list" } },
            { "/api/admins/{id}", { GET = "admin" } },
        })

        local paths = {
            "/nope", "/health/", "/health//", "//health", "/Health", "/health/x", "/",
            "/api/conversations//messages", "/api/conversations/c1/messages/", "/api/admins/",
            "/api/admins//", "/api/conversations/c1", "", "health", "*", "/health?x=1",
        }
        for _, path in ipairs(paths) do
            it("for '" .. path .. "'", function()
                assert.same({ nil, "not_found" }, { r:match("GET", path) })
            end)
        end

        it("for a path that is not a string", function()
            assert.same({ nil, "not_found" }, { r:match("GET", nil) })
        end)

        it("for a path with thousands of segments", function()
            local path = string.rep("/api", 10000)
            assert.same({ nil, "not_found" }, { r:match("GET", path) })
            assert.same({ nil, "not_found" }, { r:match("GET", string.rep("/", 10000)) })
        end)

        it("on an empty router", function()
            assert.same({ nil, "not_found" }, { router.new():match("GET", "/") })
        end)
    end)

    describe("method_not_allowed", function()
        local r = build({
            { "/items", { POST = "create", GET = "list", DELETE = "clear" } },
            { "/items/{id}", { GET = "one" } },
            { "/items/special", { PUT = "special" } },
        })

        it("lists the registered methods, sorted", function()
            assert.same({ nil, "method_not_allowed", "DELETE, GET, POST" }, { r:match("PATCH", "/items") })
        end)

        it("does not add HEAD or OPTIONS", function()
            assert.same({ nil, "method_not_allowed", "DELETE, GET, POST" }, { r:match("HEAD", "/items") })
            assert.same({ nil, "method_not_allowed", "DELETE, GET, POST" }, { r:match("OPTIONS", "/items") })
        end)

        it("joins the methods of every pattern that matches the path", function()
            assert.same({ nil, "method_not_allowed", "GET, PUT" }, { r:match("POST", "/items/special") })
            assert.same({ nil, "method_not_allowed", "GET" }, { r:match("POST", "/items/other") })
        end)

        it("is case-sensitive about methods", function()
            assert.same({ nil, "method_not_allowed", "DELETE, GET, POST" }, { r:match("get", "/items") })
        end)
    end)

    describe("add", function()
        local function ok() end

        local bad = {
            { "health", "does not start with '/'" },
            { "", "is empty" },
            { "/a/{}", "has an empty parameter" },
            { "/a/{id}/b/{id}", "repeats a parameter name" },
            { "/a//b", "has an empty segment" },
            { "/a/", "ends with a slash" },
            { "//", "is only slashes" },
            { "/a/x{id}", "mixes a literal and a parameter" },
            { "/a/{id}x", "has text after a parameter" },
            { "/a/{1x}", "has a parameter name starting with a digit" },
            { "/a/{i-d}", "has a parameter name with a dash" },
            { "/a/{id", "has an unclosed brace" },
            { "/a b", "contains a space" },
            { "/a?b", "contains a question mark" },
        }
        for _, case in ipairs(bad) do
            it("raises when the pattern " .. case[2], function()
                assert.has_error(function() router.new():add(case[1], { GET = ok }) end)
            end)
        end

        it("raises when the pattern is not a string", function()
            assert.has_error(function() router.new():add(nil, { GET = ok }) end)
            assert.has_error(function() router.new():add(42, { GET = ok }) end)
        end)

        it("raises on a pattern registered twice", function()
            local r = router.new()
            r:add("/a/{id}", { GET = ok })
            assert.has_error(function() r:add("/a/{id}", { POST = ok }) end,
                "router: pattern '/a/{id}' is already registered (as '/a/{id}')")
            assert.has_error(function() r:add("/a/{other}", { POST = ok }) end,
                "router: pattern '/a/{other}' is already registered (as '/a/{id}')")
        end)

        local bad_methods = {
            { { get = ok }, "lower-case" },
            { { Get = ok }, "mixed-case" },
            { { GET1 = ok }, "with a digit" },
            { { ["M-SEARCH"] = ok }, "with a dash" },
            { { [1] = ok }, "a number" },
            { { GET = "handler" }, "with a non-function handler" },
            { {}, "missing" },
        }
        for _, case in ipairs(bad_methods) do
            it("raises on a method name " .. case[2], function()
                assert.has_error(function() router.new():add("/x", case[1]) end)
            end)
        end

        it("raises when methods is not a table", function()
            assert.has_error(function() router.new():add("/x", ok) end)
        end)

        it("leaves the router unchanged after a rejected pattern", function()
            local r = router.new()
            pcall(r.add, r, "/x", { get = ok })
            assert.same({}, r:routes())
            assert.same({ nil, "not_found" }, { r:match("GET", "/x") })
        end)

        it("copies the methods table", function()
            local r = router.new()
            local methods = { GET = handler("a") }
            r:add("/x", methods)
            methods.POST = handler("b")
            assert.same({ nil, "method_not_allowed", "GET" }, { r:match("POST", "/x") })
        end)
    end)

    describe("body_bytes", function()
        local ok = handler("ok")

        it("is returned with the match of every method of the pattern", function()
            local r = router.new()
            r:add("/import", { POST = ok, PUT = ok, body_bytes = 5242880 })
            r:add("/items/{id}", { POST = ok, body_bytes = 10 })
            r:add("/plain", { POST = ok })
            assert.equal(5242880, select(4, r:match("POST", "/import")))
            assert.equal(5242880, select(4, r:match("PUT", "/import")))
            assert.equal(10, select(4, r:match("POST", "/items/7")))
            assert.is_nil(select(4, r:match("POST", "/plain")))
        end)

        it("is not a method", function()
            local r = router.new()
            r:add("/import", { POST = ok, body_bytes = 100 })
            assert.same({ nil, "method_not_allowed", "POST" }, { r:match("GET", "/import") })
            assert.same({ { pattern = "/import", methods = { "POST" } } }, r:routes())
        end)

        local bad = {
            { 0, "zero" },
            { 1073741825, "over 1 GiB" },
            { 1.5, "not an integer" },
            { "100", "a string" },
        }
        for _, case in ipairs(bad) do
            it("raises when it is " .. case[2], function()
                assert.has_error(function() router.new():add("/x", { POST = ok, body_bytes = case[1] }) end,
                    "router: body_bytes for '/x' must be an integer from 1 to 1073741824")
            end)
        end

        it("raises on an unknown option", function()
            assert.has_error(function() router.new():add("/x", { POST = ok, body_size = 1 }) end,
                "router: unknown option 'body_size' for '/x'")
        end)
    end)

    describe("routes", function()
        it("lists patterns sorted, with sorted method names", function()
            local r = build({
                { "/b", { POST = "p", GET = "g" } },
                { "/a/{id}", { DELETE = "d" } },
                { "/", { GET = "root" } },
            })
            assert.same({
                { pattern = "/", methods = { "GET" } },
                { pattern = "/a/{id}", methods = { "DELETE" } },
                { pattern = "/b", methods = { "GET", "POST" } },
            }, r:routes())
        end)

        it("returns copies", function()
            local r = build({ { "/a", { GET = "a" } } })
            local list = r:routes()
            list[1].methods[2] = "POST"
            list[2] = { pattern = "/b", methods = { "GET" } }
            assert.same({ { pattern = "/a", methods = { "GET" } } }, r:routes())
        end)
    end)
end)
