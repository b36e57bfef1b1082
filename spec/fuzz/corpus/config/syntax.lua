return { port = 80,, }
