-- The memberships' list checked once per list a statement adds members to,
-- instead of once per member. 0011's check looked the list up for every new
-- member (an anti-join of the new members with lists: 50,000 lookups of the
-- same list for an import of 50,000 numbers into one list). The rules stay
-- those of 0011: a new member's list must exist and is locked against
-- deletion (FOR KEY SHARE) until the transaction ends; a new member's contact
-- must exist, looked up by primary key (a statement that adds members in
-- contact id order reads that index in order).
CREATE OR REPLACE FUNCTION list_members_check() RETURNS trigger LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    wanted uuid[];
    locked bigint;
BEGIN
    SELECT array_agg(d.list_id) INTO wanted FROM (SELECT DISTINCT list_id FROM new_members) d;
    IF wanted IS NULL THEN -- no new members
        RETURN NULL;
    END IF;
    PERFORM 1 FROM lists l WHERE l.id = ANY (wanted) FOR KEY SHARE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked < cardinality(wanted) THEN
        RAISE foreign_key_violation USING MESSAGE = 'insert into list_members violates list_members_list_id_fkey: no such list',
            CONSTRAINT = 'list_members_list_id_fkey', TABLE = 'list_members';
    END IF;
    IF EXISTS (SELECT 1 FROM new_members n WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = n.contact_id)) THEN
        RAISE foreign_key_violation USING MESSAGE = 'insert into list_members violates list_members_contact_id_fkey: no such contact',
            CONSTRAINT = 'list_members_contact_id_fkey', TABLE = 'list_members';
    END IF;
    RETURN NULL;
END $$;
