-- API error responses: the status and generic message of every error code,
-- the JSON error body, and structured error values that handlers raise.
--
-- Body: {"error":{"code":"…","message":"…","requestId":"…"}}, plus
-- "fields":{…} for validation_failed only. Messages are generic; details
-- belong in the server log under the same request id.

local json = require "json"

local type, pairs, ipairs, error, tostring = type, pairs, ipairs, error, tostring
local setmetatable, getmetatable = setmetatable, getmetatable
local lower, format = string.lower, string.format
local sort, concat = table.sort, table.concat
local tointeger = math.tointeger

local M = {}

local CONTENT_TYPE <const> = "application/json; charset=utf-8"

local STATUS = {
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

local MESSAGES = {
    validation_failed = "Some fields are missing or invalid.",
    invalid_json = "The request body is not a valid JSON object.",
    unauthorized = "Authentication is required.",
    invalid_credentials = "The email or password is incorrect.",
    invalid_signature = "The webhook signature is missing or invalid.",
    forbidden = "You are not allowed to do this.",
    not_found = "Not found.",
    method_not_allowed = "This method is not allowed here.",
    email_taken = "This email address is already in use.",
    phone_taken = "This phone number is already in use.",
    contact_exists = "A contact with this phone number already exists.",
    keyword_taken = "Another list already uses this keyword.",
    opted_out = "This contact has opted out of messages.",
    invalid_state = "This broadcast cannot make that move in its present state.",
    payload_too_large = "The request body is too large.",
    unsupported_media_type = "The request body must be sent as application/json.",
    account_locked = "Too many failed sign-in attempts. Try again later.",
    rate_limited = "Too many requests. Try again later.",
    internal_error = "Something went wrong. Use the request id when reporting this.",
    service_unavailable = "The service is temporarily unavailable. Try again later.",
    tenant_unavailable = "This account is temporarily unavailable. Try again later.",
}

-- Copies, so that changing the exported tables cannot change responses.
M.STATUS, M.MESSAGES = {}, {}
for code, status in pairs(STATUS) do
    M.STATUS[code], M.MESSAGES[code] = status, MESSAGES[code]
end

local codec = json.new(16)
local encode = codec.encode

local ERROR_MT = {
    __name = "steeple.error",
    __tostring = function(e) return "api error: " .. e.code end,
}

-- The JSON text of a validation_failed "fields" object, keys sorted.
local function encode_fields(fields)
    if fields == nil then return "{}" end
    if type(fields) ~= "table" then error("errors: opts.fields must be a table", 3) end
    local keys = {}
    for k in pairs(fields) do
        if type(k) ~= "string" then error("errors: opts.fields keys must be strings", 3) end
        keys[#keys + 1] = k
    end
    sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = encode(k) .. ":" .. encode(fields[k]) end
    return "{" .. concat(parts, ",") .. "}"
end

-- The response headers: content-type plus opts.headers, names lower-cased.
-- A content-type in opts.headers is ignored: error bodies are always JSON.
local function build_headers(extra)
    local headers = { ["content-type"] = CONTENT_TYPE }
    if extra == nil then return headers end
    if type(extra) ~= "table" then error("errors: opts.headers must be a table", 3) end
    for name, value in pairs(extra) do
        if type(name) ~= "string" then error("errors: header names must be strings", 3) end
        local key = lower(name)
        if type(value) == "number" then
            value = tostring(tointeger(value) or value)
        elseif type(value) ~= "string" then
            error(format("errors: header '%s' must be a string or a number", name), 3)
        end
        if key ~= "content-type" then headers[key] = value end
    end
    return headers
end

-- Returns { status = N, headers = {…}, body = "<json>" } for an error code.
-- opts (optional): message (replaces the generic one), fields (for
-- validation_failed; an empty object when absent, ignored for other
-- codes), headers (extra headers such as Allow or Retry-After).
-- Raises on an unknown code or malformed arguments.
function M.response(request_id, code, opts)
    local status = STATUS[code]
    if not status then error(format("errors: unknown error code '%s'", tostring(code)), 2) end
    if type(request_id) ~= "string" then error("errors: request_id must be a string", 2) end
    opts = opts or {}
    local message = opts.message or MESSAGES[code]
    if type(message) ~= "string" then error("errors: opts.message must be a string", 2) end
    local body = '{"error":{"code":' .. encode(code) .. ',"message":' .. encode(message)
        .. ',"requestId":' .. encode(request_id)
    if code == "validation_failed" then
        body = body .. ',"fields":' .. encode_fields(opts.fields)
    end
    return { status = status, headers = build_headers(opts.headers), body = body .. "}}" }
end

-- Never returns: raises a structured error value carrying code and opts
-- (the same opts as errors.response). Raises a plain error on an unknown code.
function M.raise(code, opts)
    if not STATUS[code] then error(format("errors: unknown error code '%s'", tostring(code)), 2) end
    error(setmetatable({ code = code, opts = opts }, ERROR_MT))
end

-- The text of any error value, for logs and command output: a database
-- error's message, an API error's code, anything else as tostring.
function M.describe(e)
    if type(e) == "table" then
        if M.is(e) then return "api error " .. e.code end
        return tostring(e.message or e.kind or "error")
    end
    return tostring(e)
end

-- Returns whether v is a structured error value made by errors.raise.
function M.is(v)
    return type(v) == "table" and getmetatable(v) == ERROR_MT
end

-- Returns the response for an error caught from a handler: the structured
-- error's own response, or 500 internal_error for anything else (the
-- caller logs the original error).
function M.to_response(request_id, err)
    if M.is(err) then return M.response(request_id, err.code, err.opts) end
    return M.response(request_id, "internal_error")
end

return M
