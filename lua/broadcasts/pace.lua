-- Send pacing shared by every worker and node, kept in the registry's
-- send_pacing table: one row per church (its id) and one for the platform.
--
-- Calls are spaced evenly: a church with rate_per_min R gets one slot every
-- 61/R seconds, so that the first and the (R+1)-th call of any run are at
-- least 61 s apart: no 60-second window holds more than R calls even when a
-- call reaches Telnyx up to a second after its slot. The daily cap counts
-- the calls of the 24 hours that began with the first call after the last
-- such period ended.
--
--   pace.church(tenant_id, horizon_s) -> seconds to wait for the slot taken
--       (0 when due now); or nil, seconds until a slot may be free (the next
--       slot is further than horizon_s away, or the daily cap is reached)
--   pace.platform() -> seconds to wait for the platform's slot taken (0
--       without a platform limit and no slow-down)
--   pace.slow_down(tenant_id, seconds)  Telnyx asked for a pause (429):
--       the church's and the platform's next slots move that far ahead

local config = require "steeple.config"
local steeple = require "steeple"
local db = require "db"

local max = math.max

local M = {}

local DAY_S <const> = 86400
-- the window a church's rate holds in, with a second of margin
local WINDOW_S <const> = 61

-- Takes the next slot of key ($1) when it is within the horizon ($3 s) and
-- the cap ($5, 0: none) allows; slots are $2 s apart, a day is $4 s.
local TAKE <const> = [[
    UPDATE send_pacing SET
        next_at = greatest(next_at, now()) + make_interval(secs => $2),
        day_start = CASE WHEN day_start + make_interval(secs => $4) <= now() THEN now() ELSE day_start END,
        day_count = CASE WHEN day_start + make_interval(secs => $4) <= now() THEN 1 ELSE day_count + 1 END
    WHERE key = $1 AND greatest(next_at, now()) <= now() + make_interval(secs => $3)
      AND ($5 = 0 OR day_start + make_interval(secs => $4) <= now() OR day_count < $5)
    RETURNING extract(epoch FROM next_at - make_interval(secs => $2) - now())::float8 AS wait]]

-- When the next slot of key ($1) may be taken, in seconds from now: the
-- horizon ($2 s), the day ($3 s) and the cap ($4) as TAKE's.
local LATER <const> = [[
    SELECT extract(epoch FROM CASE
        WHEN $4 > 0 AND day_count >= $4 AND day_start + make_interval(secs => $3) > now()
            THEN day_start + make_interval(secs => $3)
        ELSE greatest(next_at, now()) - make_interval(secs => $2) END - now())::float8 AS later
    FROM send_pacing WHERE key = $1]]

-- The wait for a slot taken, or nil and the seconds until one may be.
local function take(key, spacing, horizon, cap)
    local registry = db.registry()
    local row = registry:query(TAKE, key, spacing, horizon, DAY_S, cap)[1]
    if row then return max(row.wait, 0) end
    local later = registry:query(LATER, key, horizon, DAY_S, cap)[1]
    if later == nil then -- the key's first call
        registry:query("INSERT INTO send_pacing (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", key)
        return take(key, spacing, horizon, cap)
    end
    return nil, max(later.later, 0.05)
end

function M.church(tenant_id, horizon)
    local rate, cap = config.messaging.rate_per_min, config.messaging.daily_cap
    if rate == 0 and cap == 0 then return 0 end
    return take(tenant_id, rate > 0 and WINDOW_S / rate or 0, horizon, cap)
end

-- this worker's own pause when the platform has no limit (no shared row)
local paused_until = 0

function M.platform()
    local per_s = config.telnyx.max_per_second
    if per_s == 0 then return max(paused_until - steeple.clock(), 0) end
    return take("platform", 1 / per_s, DAY_S, 0)
end

function M.slow_down(tenant_id, seconds)
    paused_until = max(paused_until, steeple.clock() + seconds)
    db.registry():query([[
        UPDATE send_pacing SET next_at = greatest(next_at, now() + make_interval(secs => $2))
        WHERE key = $1 OR key = 'platform']], tenant_id, seconds)
end

return M
