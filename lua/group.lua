-- Group commit: items for the same key (a church's database) that arrive
-- while a batch of that key is being written go together in the next batch.
-- A writer task per busy key takes everything queued, writes it with one
-- call of `write`, hands each submitter its own result, and goes on while
-- more came meanwhile; a key with nothing queued has no task.
--
--   local g = group.new(write)
--       write(key, items) -> results: one per item, in order, each
--       { ok = true, value = v } or { ok = false, err = e }; an error raised
--       by write is every item's error
--   g:submit(key, item, wait_ms) -> item's value, or raises its error;
--       raises group.TIMEOUT when its batch was not written within wait_ms
--       (written or not: the caller must be able to apply the item again)
--   group.is_timeout(e)

local steeple = require "steeple"
local latch = require "steeple.latch"

local pcall, error, remove = pcall, error, table.remove

local M = {}

M.TIMEOUT = setmetatable({ message = "the batch was not written in time" },
    { __tostring = function(t) return t.message end })

function M.is_timeout(e)
    return e == M.TIMEOUT
end

local Group = {}
Group.__index = Group

function M.new(write)
    return setmetatable({ write = write, keys = {} }, Group)
end

-- Writes the key's queued items, batch after batch, until none is left.
local function drain(g, key, k)
    while #k.queue > 0 do
        local batch = k.queue
        k.queue = {}
        local items = {}
        for i, e in ipairs(batch) do
            e.taken = true
            items[i] = e.item
        end
        local ok, results = pcall(g.write, key, items)
        for i, e in ipairs(batch) do
            e.result = ok and results[i] or { ok = false, err = results }
            e.latch:set()
        end
    end
    g.keys[key] = nil
end

function Group:submit(key, item, wait_ms)
    local k = self.keys[key]
    local entry = { item = item, latch = latch.new() }
    if k == nil then
        k = { queue = { entry } }
        self.keys[key] = k
        local started, why = steeple.spawn(drain, self, key, k)
        if not started then
            self.keys[key] = nil
            error(why == "stopping" and M.TIMEOUT or why, 0)
        end
    else
        k.queue[#k.queue + 1] = entry
    end
    if not entry.latch:wait(wait_ms) then
        if not entry.taken then -- never written: out of the queue
            for i, e in ipairs(k.queue) do
                if e == entry then remove(k.queue, i) break end
            end
        end
        error(M.TIMEOUT, 0)
    end
    local r = entry.result
    if r.ok then return r.value end
    error(r.err, 0)
end

return M
