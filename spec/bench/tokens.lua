-- wrk script of the benches that spread load over many churches
-- (bench_tenants.sh, bench_contacts.sh, bench_cluster.sh): each request
-- takes the access token of a church picked at random from the file
-- BENCH_TOKENS (one a line), uniformly or, with BENCH_ZIPF = s > 0,
-- Zipf-distributed (church k with weight 1/k^s); the method, path and body
-- are wrk's own (the URL's path and query). done() prints "status CODE
-- COUNT" per status and "timeouts N", for wrk_summary.sh. wrk runs LuaJIT
-- (Lua 5.1).
-- luacheck: std luajit, globals wrk tid setup init request response done statuses, no unused args
local file, s = os.getenv("BENCH_TOKENS"), tonumber(os.getenv("BENCH_ZIPF") or "0")
local threads = {}
function setup(thread)
    thread:set("tid", #threads + 1)
    threads[#threads + 1] = thread
end
local tokens, cum, n = {}, {}, 0
function init()
    statuses = {}
    for line in io.lines(file) do
        n = n + 1
        tokens[n] = { Authorization = "Bearer " .. line }
    end
    local total = 0
    for k = 1, n do
        total = total + (s > 0 and 1 / k ^ s or 1)
        cum[k] = total
    end
    for k = 1, n do cum[k] = cum[k] / total end
    math.randomseed(os.time() * 100 + tid)
end
local function pick()
    local r, lo, hi = math.random(), 1, n
    while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if cum[mid] < r then lo = mid + 1 else hi = mid end
    end
    return tokens[lo]
end
function request()
    return wrk.format(nil, nil, pick())
end
function response(status)
    statuses[status] = (statuses[status] or 0) + 1
end
function done(summary)
    local total = {}
    for _, t in ipairs(threads) do
        for code, c in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + c end
    end
    for code, c in pairs(total) do print("status " .. code .. " " .. c) end
    print("timeouts " .. summary.errors.timeout)
end
