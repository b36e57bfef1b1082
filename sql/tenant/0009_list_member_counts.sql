-- A list's member count, kept once per statement instead of once per row:
-- adding thousands of members at once (an import) updated the list's row
-- once per member, and each update of a row already updated in the same
-- transaction walks every earlier version of it.
DROP TRIGGER list_members_count ON list_members;
DROP FUNCTION list_members_count();

CREATE FUNCTION list_members_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lists l SET member_count = l.member_count + n.added
    FROM (SELECT list_id, count(*) AS added FROM new_members GROUP BY list_id) n
    WHERE l.id = n.list_id;
    RETURN NULL;
END $$;

CREATE FUNCTION list_members_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lists l SET member_count = l.member_count - o.removed
    FROM (SELECT list_id, count(*) AS removed FROM old_members GROUP BY list_id) o
    WHERE l.id = o.list_id;
    RETURN NULL;
END $$;

CREATE TRIGGER list_members_added AFTER INSERT ON list_members
    REFERENCING NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION list_members_added();
CREATE TRIGGER list_members_removed AFTER DELETE ON list_members
    REFERENCING OLD TABLE AS old_members
    FOR EACH STATEMENT EXECUTE FUNCTION list_members_removed();
