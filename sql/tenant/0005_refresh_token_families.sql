-- A refresh token family (one sign-in and the tokens its rotations made)
-- gets a row of its own. Logout marks it revoked; a refresh locks it and
-- checks it in the transaction that adds the new token. So a rotation that
-- races a logout either commits first, and the logout's revocation covers
-- the new token, or waits and finds the family revoked.
CREATE TABLE refresh_token_families (
    id uuid PRIMARY KEY,
    admin_id uuid NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE INDEX refresh_token_families_admin ON refresh_token_families (admin_id);

-- the families of the tokens issued so far; one whose every token is
-- revoked is revoked
INSERT INTO refresh_token_families (id, admin_id, created_at, revoked_at)
SELECT family_id, (array_agg(admin_id))[1], min(created_at),
       CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END
FROM refresh_tokens
GROUP BY family_id;

ALTER TABLE refresh_tokens ADD CONSTRAINT refresh_tokens_family_id_fkey
    FOREIGN KEY (family_id) REFERENCES refresh_token_families (id) ON DELETE CASCADE;
