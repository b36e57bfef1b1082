return { port = "8080", log = "debug" }
