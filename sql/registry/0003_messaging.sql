-- Messaging state the registry keeps.

-- Webhook events no church could take (no tenant has the number): kept for
-- operators, never dropped.
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    event_id text,
    event_type text,
    phone_number text,
    reason text NOT NULL,
    body text NOT NULL, -- the event as received
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The same event delivered again is kept once.
CREATE UNIQUE INDEX dead_letters_event ON dead_letters (event_id) WHERE event_id IS NOT NULL;

-- Churches with outbound messages still queued: after a restart the sender
-- looks in these churches' databases only.
CREATE TABLE outbox_tenants (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    since timestamptz NOT NULL DEFAULT now()
);
