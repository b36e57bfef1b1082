error({ "a table, not a message" })
