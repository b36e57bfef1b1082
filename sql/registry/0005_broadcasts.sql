-- Churches with a broadcast scheduled or sending, and when the dispatcher
-- should look at them next: it visits no other church's database.
CREATE TABLE broadcast_tenants (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    due_at timestamptz NOT NULL
);
CREATE INDEX broadcast_tenants_due ON broadcast_tenants (due_at);

-- Send pacing shared by every worker and node: per church (key: its id) and
-- for the platform (key 'platform'). next_at is the earliest time of the
-- next call (calls are spaced evenly); day_start and day_count count the
-- calls of the 24 hours that began at day_start.
CREATE TABLE send_pacing (
    key text PRIMARY KEY,
    next_at timestamptz NOT NULL DEFAULT now(),
    day_start timestamptz NOT NULL DEFAULT now(),
    day_count integer NOT NULL DEFAULT 0
);
