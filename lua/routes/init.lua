-- The route modules, in the order they are registered. Each returns
-- { ["/path/{param}"] = { GET = handler, POST = handler } }.
return {
    "ops",
    "auth",
    "admins",
    "messaging",
    "contacts",
    "contacts_import",
    "broadcasts",
}
