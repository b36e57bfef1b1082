return { listen = tostring(os) .. tostring(io) .. tostring(require), env = type(load) }
