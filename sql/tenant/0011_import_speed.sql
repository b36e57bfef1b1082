-- A list's memberships checked once per statement instead of once per row.
-- The two foreign keys of list_members ran a lookup and a row lock for every
-- new member: an import of 50,000 numbers into a list spent about as long in
-- them as in storing the members. The same rules, per statement:
--  - a new member's list must exist, and is locked against deletion (FOR KEY
--    SHARE, as the foreign key did) until the transaction ends;
--  - a new member's contact must exist. It is not locked: a contact is never
--    removed, only marked deleted (0007_contacts.sql);
--  - deleting a list or a contact deletes its memberships (the cascade).
-- The check looks members up by primary key whatever the statistics say:
-- contacts inserted by the same transaction (an import) are not counted yet,
-- and a plan that scans contacts once per member takes minutes.
ALTER TABLE list_members
    DROP CONSTRAINT list_members_list_id_fkey,
    DROP CONSTRAINT list_members_contact_id_fkey;

CREATE FUNCTION list_members_check() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    PERFORM 1 FROM lists l WHERE l.id IN (SELECT list_id FROM new_members) FOR KEY SHARE;
    IF EXISTS (SELECT 1 FROM new_members n WHERE NOT EXISTS (SELECT 1 FROM lists l WHERE l.id = n.list_id)) THEN
        RAISE foreign_key_violation USING MESSAGE = 'insert into list_members violates list_members_list_id_fkey: no such list',
            CONSTRAINT = 'list_members_list_id_fkey', TABLE = 'list_members';
    END IF;
    IF EXISTS (SELECT 1 FROM new_members n WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = n.contact_id)) THEN
        RAISE foreign_key_violation USING MESSAGE = 'insert into list_members violates list_members_contact_id_fkey: no such contact',
            CONSTRAINT = 'list_members_contact_id_fkey', TABLE = 'list_members';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER list_members_check AFTER INSERT ON list_members
    REFERENCING NEW TABLE AS new_members
    FOR EACH STATEMENT EXECUTE FUNCTION list_members_check();

CREATE FUNCTION lists_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM list_members m USING old_lists o WHERE m.list_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER lists_deleted AFTER DELETE ON lists
    REFERENCING OLD TABLE AS old_lists
    FOR EACH STATEMENT EXECUTE FUNCTION lists_deleted();

CREATE FUNCTION contacts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM list_members m USING old_contacts o WHERE m.contact_id = o.id;
    RETURN NULL;
END $$;
CREATE TRIGGER contacts_deleted AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION contacts_deleted();
