std = "lua54"
max_line_length = 120
exclude_files = { "vendor/**", "build/**" }

files["spec/**"] = { std = "+busted", max_line_length = 140 }
