-- Every admin's email over all churches, as a keyed hash of the normalized
-- address (never the address itself): login finds the church from it, and the
-- primary key makes an email unique across tenants, so a race of two
-- registrations is decided here.
CREATE TABLE admin_emails (
    email_hash bytea PRIMARY KEY CHECK (length(email_hash) = 32),
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    admin_id uuid NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX admin_emails_tenant ON admin_emails (tenant_id);
