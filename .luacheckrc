std = "lua54"
max_line_length = 120
-- the fuzz corpus holds files that are not valid Lua on purpose
exclude_files = { "vendor/**", "build/**", "spec/fuzz/corpus/**" }

files["spec/**"] = { std = "+busted", max_line_length = 140 }
