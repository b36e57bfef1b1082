-- The secret keys, from the configuration (STEEPLE_JWT_SECRET,
-- STEEPLE_DATA_KEY), with the email keys derived from the data key.
--
--   keys.jwt()          the HMAC key of access tokens
--   keys.email_index()  the key of the email blind index (keyed BLAKE2b)
--   keys.email_seal()   the key that encrypts emails (XChaCha20-Poly1305)
--
-- The server refuses to start without the keys (development makes them), so
-- a missing key here is a misconfigured command: it raises.

local config = require "steeple.config"
local crypto = require "steeple.crypto"

local error = error

local M = {}

local loaded

local function load()
    local secret, data = config.auth.jwt_secret, config.auth.data_key
    data = data and crypto.base64_decode(data)
    if secret == nil or data == nil or #data ~= 32 then
        error("auth keys are not configured (STEEPLE_JWT_SECRET, STEEPLE_DATA_KEY)", 0)
    end
    loaded = {
        jwt = secret,
        email_index = crypto.derive_key(data, 1, "emailidx"),
        email_seal = crypto.derive_key(data, 2, "emailenc"),
    }
    return loaded
end

function M.jwt() return (loaded or load()).jwt end
function M.email_index() return (loaded or load()).email_index end
function M.email_seal() return (loaded or load()).email_seal end

return M
