-- Statistics of the lower-cased names, so that a name-prefix search
-- (GET /api/contacts?q=) is planned on what the names hold.
-- The search's conditions are lower(first_name) LIKE 'prefix%' and
-- lower(last_name) LIKE 'prefix%'; contacts_first_name_prefix and
-- contacts_last_name_prefix (0007_contacts.sql) serve them. But those indexes
-- are partial (deleted_at IS NULL), and the planner takes no statistics from
-- a partial index: it guessed 0.5% of the contacts for every prefix, and with
-- ORDER BY created_at LIMIT n it walked contacts_created and filtered. On
-- 100,000 contacts a prefix that matched nothing read every one (tens of
-- milliseconds) where the prefix indexes answer in well under one.
-- With these, a selective prefix is read from the prefix indexes and a
-- common one (a single letter) still from contacts_created, which finds a
-- page of matches first.
CREATE STATISTICS contacts_first_name_lower ON (lower(first_name)) FROM contacts;
CREATE STATISTICS contacts_last_name_lower ON (lower(last_name)) FROM contacts;
ANALYZE contacts;
