return { db = { url = "postgres://x", poolmax = 4 }, colour = "blue" }
