local base = 8000
local t = { port = base + 80, limits = {} }
for i = 1, 3 do t.limits.json_max_depth = (t.limits.json_max_depth or 0) + i end
t.listen = string.format("%d.%d.%d.%d", 10, 0, 0, 1)
t.log = { level = ("WARN"):lower() }
return t
