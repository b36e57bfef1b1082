-- wrk script of the webhook benches (bench_messaging.sh, bench_contacts.sh,
-- bench_cluster.sh):
-- cycles through the signed requests of the file BENCH_WEBHOOKS (lines
-- "timestamp<TAB>signature<TAB>body" from sign_webhooks.c), POSTed to wrk's
-- path; of BENCH_THREADS threads, thread t takes lines t, t+T, ... done()
-- prints "status CODE COUNT" per status, "duplicate N", "spooled N",
-- "wrapped N" (times a thread went round its list), "duration_us N" and
-- "timeouts N". wrk runs LuaJIT (Lua 5.1).
-- luacheck: std luajit, globals wrk tid setup init request response done statuses duplicate spooled wrapped, no unused args
local file = os.getenv("BENCH_WEBHOOKS")
local nthreads = tonumber(os.getenv("BENCH_THREADS"))
local threads = {}
function setup(thread)
    thread:set("tid", #threads)
    threads[#threads + 1] = thread
end
local reqs, n, i = {}, 0, 0
function init()
    statuses, duplicate, spooled, wrapped = {}, 0, 0, 0
    local k = 0
    for line in io.lines(file) do
        if k % nthreads == tid then
            local ts, sig, body = line:match("^(%d+)\t(%S+)\t(.*)$")
            n = n + 1
            reqs[n] = wrk.format("POST", nil, {
                ["Content-Type"] = "application/json", ["telnyx-timestamp"] = ts,
                ["telnyx-signature-ed25519"] = sig }, body)
        end
        k = k + 1
    end
end
function request()
    i = i + 1
    if i > n then i, wrapped = 1, wrapped + 1 end
    return reqs[i]
end
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if body:find('"duplicate"', 1, true) then duplicate = duplicate + 1
    elseif body:find('"spooled"', 1, true) then spooled = spooled + 1 end
end
function done(summary)
    local total, dup, spo, wr = {}, 0, 0, 0
    for _, t in ipairs(threads) do
        for code, c in pairs(t:get("statuses")) do total[code] = (total[code] or 0) + c end
        dup, spo, wr = dup + t:get("duplicate"), spo + t:get("spooled"), wr + t:get("wrapped")
    end
    for code, c in pairs(total) do print("status " .. code .. " " .. c) end
    print("duplicate " .. dup)
    print("spooled " .. spo)
    print("wrapped " .. wr)
    print("duration_us " .. summary.duration)
    print("timeouts " .. summary.errors.timeout)
end
