-- The area code table of broadcasts (lua/broadcasts/area_codes.lua): only
-- geographic NANP codes, each mapped to one of a known set of IANA zones.

local ZONES <const> = {
    "America/New_York", "America/Detroit", "America/Indiana/Indianapolis", "America/Chicago",
    "America/Denver", "America/Boise", "America/Phoenix", "America/Los_Angeles",
    "America/Anchorage", "Pacific/Honolulu", "America/Puerto_Rico", "America/St_Thomas",
    "Pacific/Guam", "Pacific/Saipan", "Pacific/Pago_Pago", "America/Toronto",
    "America/Winnipeg", "America/Regina", "America/Edmonton", "America/Vancouver",
    "America/Moncton", "America/Halifax", "America/St_Johns",
}

local NON_GEOGRAPHIC <const> = {
    "800", "888", "877", "866", "855", "844", "833", "900", "500", "533", "544", "566",
    "577", "588", "600", "700", "710",
}

local KNOWN <const> = {
    ["212"] = "America/New_York", ["646"] = "America/New_York", ["917"] = "America/New_York",
    ["332"] = "America/New_York", ["213"] = "America/Los_Angeles", ["808"] = "Pacific/Honolulu",
    ["907"] = "America/Anchorage", ["602"] = "America/Phoenix", ["787"] = "America/Puerto_Rico",
    ["416"] = "America/Toronto", ["604"] = "America/Vancouver", ["306"] = "America/Regina",
    ["709"] = "America/St_Johns", ["312"] = "America/Chicago", ["303"] = "America/Denver",
    ["915"] = "America/Denver", ["403"] = "America/Edmonton", ["902"] = "America/Halifax",
    ["671"] = "Pacific/Guam",
}

describe("broadcasts.area_codes", function()
    local codes

    setup(function()
        package.loaded["broadcasts.area_codes"] = nil
        codes = require("broadcasts.area_codes")
    end)

    teardown(function()
        package.loaded["broadcasts.area_codes"] = nil
    end)

    it("has only three-digit NANP area codes as keys", function()
        for code in pairs(codes) do
            assert.is_string(code)
            assert.is_truthy(code:match("^[2-9][0-8]%d$"), "not an area code: " .. tostring(code))
        end
    end)

    it("leaves out every non-geographic code", function()
        for _, code in ipairs(NON_GEOGRAPHIC) do
            assert.is_nil(codes[code], code .. " is not geographic")
        end
    end)

    it("holds at least 330 codes", function()
        local n = 0
        for _ in pairs(codes) do n = n + 1 end
        assert.is_true(n >= 330, "only " .. n .. " codes")
    end)

    it("maps every code to one of the known zones", function()
        local known = {}
        for _, zone in ipairs(ZONES) do known[zone] = true end
        for code, zone in pairs(codes) do
            assert.is_true(known[zone] == true, code .. " maps to an unknown zone " .. tostring(zone))
        end
    end)

    it("maps well-known codes to their zones", function()
        for code, zone in pairs(KNOWN) do
            assert.are.equal(zone, codes[code], "area code " .. code)
        end
    end)
end)
