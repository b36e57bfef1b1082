local netaddr = require "netaddr"

describe("netaddr", function()
    local function hex(bytes)
        return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
    end

    local function allows(list_text, address)
        return assert(netaddr.list(list_text)):contains(address)
    end

    it("parses IPv4 as IPv4-mapped IPv6", function()
        assert.equal("00000000000000000000ffff7f000001", hex(netaddr.parse("127.0.0.1")))
        assert.equal("00000000000000000000ffffffffffff", hex(netaddr.parse("255.255.255.255")))
        for _, bad in ipairs({ "256.0.0.1", "1.2.3", "1.2.3.4.5", "01234.1.1.1", "1.2.3.-4", "", "a.b.c.d" }) do
            assert.is_nil(netaddr.parse(bad), bad)
        end
    end)

    it("parses every IPv6 form", function()
        assert.equal("00000000000000000000000000000001", hex(netaddr.parse("::1")))
        assert.equal("00000000000000000000000000000000", hex(netaddr.parse("::")))
        assert.equal("20010db8000000000000000000000001", hex(netaddr.parse("2001:db8::1")))
        assert.equal("20010db8000000000000000000000001", hex(netaddr.parse("2001:DB8:0:0:0:0:0:1")))
        assert.equal("fe800000000000000000000000000000", hex(netaddr.parse("fe80::")))
        assert.equal("00010002000300040005000600070000", hex(netaddr.parse("1:2:3:4:5:6:7::")))
        assert.equal("00000000000000000000ffff7f000001", hex(netaddr.parse("::ffff:127.0.0.1")))
        assert.equal(netaddr.parse("127.0.0.1"), netaddr.parse("::ffff:7f00:1"))
        for _, bad in ipairs({ ":::", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", ":1",
                               "1:", "::g", "::1.2.3.256", "1:2:3:4:5:6:7::8:9" }) do
            assert.is_nil(netaddr.parse(bad), bad)
        end
    end)

    it("matches IPv4 blocks, IPv4-mapped peers included", function()
        assert.is_true(allows("127.0.0.0/8", "127.0.0.2"))
        assert.is_true(allows("127.0.0.0/8", "::ffff:127.9.9.9"))
        assert.is_false(allows("127.0.0.0/8", "128.0.0.1"))
        assert.is_true(allows("10.1.2.0/23", "10.1.3.255"))
        assert.is_false(allows("10.1.2.0/23", "10.1.4.0"))
        assert.is_true(allows("192.0.2.7", "192.0.2.7"))
        assert.is_false(allows("192.0.2.7", "192.0.2.8"))
        assert.is_true(allows("0.0.0.0/0", "203.0.113.9"))
        assert.is_false(allows("0.0.0.0/0", "::1"))
    end)

    it("matches IPv6 blocks, with or without a zone", function()
        assert.is_true(allows("::1", "::1"))
        assert.is_false(allows("::1", "::2"))
        assert.is_true(allows("fe80::/10", "febf::1%eth0"))
        assert.is_false(allows("fe80::/10", "fec0::1"))
        assert.is_true(allows("2001:db8::/32", "2001:db8:ffff::1"))
        assert.is_true(allows("::/0", "127.0.0.1"))
    end)

    it("reads comma-separated lists and names the first bad item", function()
        assert.is_true(allows(" 10.0.0.0/8 ,::1", "::1"))
        assert.is_true(allows(" 10.0.0.0/8 ,::1", "10.200.0.1"))
        assert.is_false(allows(" 10.0.0.0/8 ,::1", "127.0.0.1"))
        assert.same({ nil, "'1.2.3.4/33' is not an address or CIDR block" }, { netaddr.list("::1, 1.2.3.4/33") })
        assert.same({ nil, "'host' is not an address or CIDR block" }, { netaddr.list("host") })
        assert.same({ nil, "'' is not an address or CIDR block" }, { netaddr.list("::1,,::2") })
        assert.same({ nil, "'::/129' is not an address or CIDR block" }, { netaddr.list("::/129") })
    end)

    it("refuses what is not an address", function()
        local list = assert(netaddr.list("0.0.0.0/0, ::/0"))
        for _, v in ipairs({ "", "unix:/tmp/sock", "localhost", "1.2.3.4:80" }) do
            assert.is_false(list:contains(v), v)
        end
        assert.is_false(list:contains(nil))
    end)
end)
