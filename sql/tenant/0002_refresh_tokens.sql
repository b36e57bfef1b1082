-- Refresh tokens, stored as SHA-256 hashes. Each use rotates the token: the
-- used row is marked and a new one joins the same family; a used token
-- presented again revokes its whole family.
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id uuid NOT NULL,
    admin_id uuid NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_admin ON refresh_tokens (admin_id);
