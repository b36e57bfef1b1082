-- The people side: contacts with names and consent, lists and their members,
-- the suppression of opted-out numbers and the history of every consent change.

-- A contact is never removed, only marked deleted: its conversation and
-- messages stay, and the number keeps its consent state (an opt-out holds).
ALTER TABLE contacts
    ADD COLUMN first_name text CHECK (char_length(first_name) <= 100),
    ADD COLUMN last_name text CHECK (char_length(last_name) <= 100),
    ADD COLUMN consent text NOT NULL DEFAULT 'unknown'
        CHECK (consent IN ('opted_in', 'opted_out', 'unknown')),
    ADD COLUMN consent_source text CHECK (consent_source IN ('admin', 'import', 'keyword', 'carrier')),
    ADD COLUMN consent_at timestamptz,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT contacts_consent_source CHECK ((consent = 'unknown') = (consent_source IS NULL));

-- The contact list: oldest first, keyset-paged, deleted ones left out.
CREATE INDEX contacts_created ON contacts (created_at, id) WHERE deleted_at IS NULL;
-- Search by a prefix of the number or of a name (case-insensitive).
CREATE INDEX contacts_phone_prefix ON contacts (phone_number text_pattern_ops) WHERE deleted_at IS NULL;
CREATE INDEX contacts_first_name_prefix ON contacts (lower(first_name) text_pattern_ops)
    WHERE deleted_at IS NULL;
CREATE INDEX contacts_last_name_prefix ON contacts (lower(last_name) text_pattern_ops)
    WHERE deleted_at IS NULL;

CREATE TABLE lists (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- joins by text message; stored upper-case, unique per church
    keyword text UNIQUE CHECK (keyword ~ '^[A-Z0-9]{2,20}$'),
    member_count integer NOT NULL DEFAULT 0 CHECK (member_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE list_members (
    list_id uuid NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, contact_id)
);
CREATE INDEX list_members_contact ON list_members (contact_id);

-- A list's member count follows its memberships, so reading a list never
-- counts its members.
CREATE FUNCTION list_members_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE lists SET member_count = member_count + 1 WHERE id = NEW.list_id;
    ELSE
        UPDATE lists SET member_count = member_count - 1 WHERE id = OLD.list_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER list_members_count AFTER INSERT OR DELETE ON list_members
    FOR EACH ROW EXECUTE FUNCTION list_members_count();

-- Numbers that opted out (by keyword or at the carrier). Kept apart from the
-- contact so that it outlives it; every send checks it.
CREATE TABLE suppressions (
    phone_number text PRIMARY KEY,
    source text NOT NULL CHECK (source IN ('keyword', 'carrier')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every change of a number's consent, oldest first. Append-only.
CREATE TABLE consent_events (
    id bigserial PRIMARY KEY,
    phone_number text NOT NULL,
    contact_id uuid,
    from_state text NOT NULL CHECK (from_state IN ('opted_in', 'opted_out', 'unknown')),
    to_state text NOT NULL CHECK (to_state IN ('opted_in', 'opted_out', 'unknown')),
    source text NOT NULL CHECK (source IN ('admin', 'import', 'keyword', 'carrier')),
    message_id uuid, -- the inbound message that asked for it, when one did
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_events_number ON consent_events (phone_number, id);

CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_events is append-only';
END $$;
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION consent_events_append_only();
