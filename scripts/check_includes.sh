#!/usr/bin/env bash
# check_includes.sh — fails when the modules of core/ depend on each other in
# a circle, and names every circle.
#
#   scripts/check_includes.sh [--graph] [CORE_DIR [OBJ_DIR]]
#
# A module is X.c with X.h (core/main.c is the module main); a module split
# over several files keeps its private declarations in X_internal.h, and
# every X_*.c beside it is part of X (the spool's record, files, index, ...).
# X depends on Y when:
#   - X.c or X.h includes "Y.h"; a header with no C file of its own (config.h,
#     lmod.h) stands for the modules whose C files define what it declares, or
#     for itself when they define nothing of it (clock.h's inline functions);
#     one of several such modules including it (lmod_db.c, lmod.h) depends
#     on none of the others through it;
#   - X.o uses a symbol that Y.o defines (nm on OBJ_DIR, default build/obj;
#     left out when the objects are not built), so that a prototype copied
#     into a C file instead of an include is seen too.
# --graph prints the edges (module -> modules) before the verdict. The
# verdict is one TAP line (spec/run.sh runs this with the C tests).
set -euo pipefail
cd "$(dirname "$0")/.."

graph=0
if [ "${1:-}" = --graph ]; then graph=1; shift; fi
core=${1:-core}
obj=${2:-build/obj}

# module_of FILE: the module a C file or header belongs to
module_of() {
    local m
    m=$(basename "${1%.*}")
    if [[ $m == *_* && -f $core/${m%%_*}_internal.h ]]; then m=${m%%_*}; fi
    echo "$m"
}

facts() {
    local f m o
    for f in "$core"/*.c "$core"/*.h; do
        m=$(module_of "$f")
        sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)\.h".*/inc '"$m ${f##*/}"' \1/p' "$f"
    done
    # what each header declares, and what each C file defines at file scope:
    # a line at column 0 that names a function and does not end in ';'
    for f in "$core"/*.h; do
        m=$(module_of "$f")
        grep -oE '^[A-Za-z_][^;]*' "$f" | grep -vE '^(static|typedef|#)' |
            grep -oE '[A-Za-z_][A-Za-z0-9_]*\(' | sed "s/($//; s/^/decl $m /" || true
    done
    for f in "$core"/*.c; do
        m=$(module_of "$f")
        grep -E '^[A-Za-z_]' "$f" | grep -vE '^(static|typedef|extern)|;[[:space:]]*$' |
            grep -oE '[A-Za-z_][A-Za-z0-9_]*\(' | sed "s/($//; s/^/def $m /" || true
    done
    if compgen -G "$obj/*.o" >/dev/null; then
        for f in "$core"/*.c; do
            o=$obj/$(basename "${f%.c}").o
            [ -f "$o" ] || continue
            m=$(module_of "$f")
            nm -g --defined-only "$o" | awk -v m="$m" 'NF == 3 { print "sym", m, $3 }'
            nm -u "$o" | awk -v m="$m" '{ print "use", m, $NF }'
        done
    else
        echo "nosyms $obj"
    fi
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
facts >"$tmp"
prog=$(cat <<'LUA'
local show_graph = GRAPH == 1
local has_c, has_h, modules = {}, {}, {}
local includes, decls, defs, syms, uses = {}, {}, {}, {}, {}
local nosyms

-- the module of a file name without extension (see module_of above)
local function module_of(name)
    local prefix = name:match("^([^_]+)_")
    local f = prefix and io.open(CORE .. "/" .. prefix .. "_internal.h")
    if f then
        f:close()
        return prefix
    end
    return name
end

local function add(t, k, v)
    t[k] = t[k] or {}
    t[k][#t[k] + 1] = v
end

for line in io.lines(FACTS) do
    local kind, a, b, c = line:match("^(%S+) (%S+) ?(%S*) ?(%S*)$")
    if kind == "inc" then
        add(includes, a, { file = b, header = module_of(c) })
    elseif kind == "decl" then
        add(decls, a, b)
    elseif kind == "def" then
        defs[b] = defs[b] or a
    elseif kind == "sym" then
        syms[b] = a
    elseif kind == "use" then
        add(uses, a, b)
    elseif kind == "nosyms" then
        nosyms = a
    end
end
for m in pairs(includes) do modules[m] = true end
for _, dir in ipairs({ "c", "h" }) do
    local p = io.popen("ls " .. CORE .. "/*." .. dir .. " 2>/dev/null")
    for f in p:lines() do
        local m = module_of(f:match("([^/]+)%.%a$"))
        modules[m] = true
        if dir == "c" then has_c[m] = true else has_h[m] = true end
    end
    p:close()
end

-- the modules a header stands for
local owners = {}
local function owners_of(h)
    if owners[h] then return owners[h] end
    local set, list = {}, {}
    if has_c[h] then
        list[1] = h
    else
        for _, name in ipairs(decls[h] or {}) do
            local m = defs[name] or syms[name]
            if m and not set[m] then
                set[m] = true
                list[#list + 1] = m
            end
        end
        table.sort(list)
        if #list == 0 then list[1] = h end
    end
    owners[h] = list
    return list
end

local edges, why = {}, {}
local function edge(x, y, reason)
    if x == y then return end
    edges[x] = edges[x] or {}
    edges[x][y] = true
    why[x .. ">" .. y] = why[x .. ">" .. y] or {}
    local r = why[x .. ">" .. y]
    if #r < 3 then r[#r + 1] = reason end
end

for x, list in pairs(includes) do
    for _, inc in ipairs(list) do
        if has_c[inc.header] or has_h[inc.header] then
            local list = owners_of(inc.header)
            local own = false
            for _, y in ipairs(list) do own = own or y == x end
            -- one of several modules behind a header includes it for its own
            -- declarations, not for its siblings'
            if own and #list > 1 then list = {} end
            for _, y in ipairs(list) do
                local via = y == inc.header and "" or " (declares " .. y .. "'s functions)"
                edge(x, y, inc.file .. " includes " .. inc.header .. ".h" .. via)
            end
        end
    end
end
for x, list in pairs(uses) do
    for _, name in ipairs(list) do
        local y = syms[name]
        if y then edge(x, y, x .. ".o uses " .. name) end
    end
end

local names = {}
for m in pairs(modules) do names[#names + 1] = m end
table.sort(names)
local function targets(x)
    local t = {}
    for y in pairs(edges[x] or {}) do t[#t + 1] = y end
    table.sort(t)
    return t
end

if show_graph then
    for _, x in ipairs(names) do
        local t = targets(x)
        if #t > 0 then print(x .. " -> " .. table.concat(t, " ")) end
    end
end

-- shortest path from a to b (breadth first, in name order)
local function path(a, b)
    local prev, queue, seen = {}, { a }, { [a] = true }
    local i = 1
    while queue[i] do
        local x = queue[i]
        i = i + 1
        for _, y in ipairs(targets(x)) do
            if not seen[y] then
                seen[y], prev[y] = true, x
                if y == b then
                    local p = { b }
                    while p[1] ~= a do table.insert(p, 1, prev[p[1]]) end
                    return p
                end
                queue[#queue + 1] = y
            end
        end
    end
end

-- every edge on a circle gives the shortest circle through it; each circle
-- is printed once, starting at its smallest name
local cycles, seen = {}, {}
for _, x in ipairs(names) do
    for _, y in ipairs(targets(x)) do
        local back = path(y, x)
        if back then
            local c = { x }
            for _, m in ipairs(back) do c[#c + 1] = m end
            c[#c] = nil
            local low = 1
            for k = 2, #c do if c[k] < c[low] then low = k end end
            local r = {}
            for k = 0, #c - 1 do r[#r + 1] = c[(low - 1 + k) % #c + 1] end
            local key = table.concat(r, " ")
            if not seen[key] then
                seen[key] = true
                cycles[#cycles + 1] = r
            end
        end
    end
end
table.sort(cycles, function(p, q)
    if #p ~= #q then return #p < #q end
    return table.concat(p, " ") < table.concat(q, " ")
end)

if nosyms then
    print("check_includes: no objects in " .. nosyms .. ": includes only, not symbols")
end
for _, c in ipairs(cycles) do
    local ring = {}
    for _, m in ipairs(c) do ring[#ring + 1] = m end
    ring[#ring + 1] = c[1]
    print("cycle: " .. table.concat(ring, " -> "))
    for k = 1, #c do
        local x, y = c[k], c[k % #c + 1]
        print("  " .. x .. " -> " .. y .. ": " .. table.concat(why[x .. ">" .. y], "; "))
    end
end
if #cycles > 0 then
    print(("not ok - check_includes: %d circles among the modules of core/"):format(#cycles))
    os.exit(1)
end
print(("ok - check_includes: %d modules, no circles"):format(#names))
LUA
)
lua5.4 -e "FACTS='$tmp' GRAPH=$graph CORE='$core'" -e "$prog"
