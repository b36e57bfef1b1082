return { port = 70000, workers = -1, limits = { header_bytes = 10, read_timeout_s = 0 } }
