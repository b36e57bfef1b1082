-- Churches: where each one's database lives, and its messaging number.
CREATE TABLE tenants (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    church_name text NOT NULL,
    status text NOT NULL DEFAULT 'provisioning'
        CHECK (status IN ('provisioning', 'active', 'suspended')),
    db_server text NOT NULL,
    db_name text NOT NULL UNIQUE CHECK (db_name ~ '^tenant_[a-z0-9]+$'),
    phone_number text UNIQUE CHECK (phone_number ~ '^\+[0-9]{8,15}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The janitor looks for registrations cut short.
CREATE INDEX tenants_provisioning ON tenants (created_at) WHERE status = 'provisioning';
-- Placement counts tenants per server.
CREATE INDEX tenants_db_server ON tenants (db_server);
