-- The church's administrators. Emails are stored encrypted, with a keyed
-- hash for lookups; passwords as argon2id hashes.
CREATE TABLE admins (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email_hash bytea NOT NULL UNIQUE,
    email_enc bytea NOT NULL,
    name text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('owner', 'admin')),
    failed_attempts integer NOT NULL DEFAULT 0,
    lock_count integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
