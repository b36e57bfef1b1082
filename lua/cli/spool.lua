-- steeple spool status | replay
--
-- The webhook spool of this machine (spool.dir): every worker's files. While
-- a server runs, its workers own them (and replay them by themselves): the
-- command then says so and exits 1.
-- status: files, records waiting and their bytes, bytes skipped as corrupt.
-- replay: one pass over every waiting record now (each church's in order;
--   one whose database cannot take them now holds back only its own); exits
--   1 if some could not be applied (a database is still down).

local spool = require "steeple.spool"
local webhook = require "messaging.webhook"
local errors = require "errors"
local out = require("cli.out").line

local pcall = pcall

local M = {}

local function status()
    local st = spool.stats()
    out("files %d, records waiting %d (%d bytes), bytes skipped as corrupt %d",
        st.files, st.pending, st.pending_bytes, st.skipped_bytes)
    return 0
end

local function replay()
    local pass, total = webhook.pass(), 0
    while not pass.over do total = total + webhook.replay(pass, 200) end
    if spool.pending() > 0 then
        out("applied %d; %d still waiting (the databases cannot take them now)", total, spool.pending())
        return 1
    end
    out("applied %d; nothing waiting", total)
    return 0
end

function M.main(args)
    local cmd = args[1]
    if #args ~= 1 or (cmd ~= "status" and cmd ~= "replay") then
        io.stderr:write("usage: steeple spool status | replay\n")
        return 2
    end
    if not spool.configured() then
        io.stderr:write("steeple spool: the spool is in use by a running server (which replays it by itself)\n")
        return 1
    end
    local ok, res = pcall(cmd == "status" and status or replay)
    if ok then return res end
    io.stderr:write("steeple spool: ", errors.describe(res), "\n")
    return 1
end

return M
