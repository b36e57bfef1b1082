-- Work that must run once per cluster (the janitor, the outbox sweep, the
-- broadcast stall report): one row per chore. A worker runs a chore only
-- while it holds its lease (holder = its node and worker number); any worker
-- of any node takes a lease whose lease_until has passed.
CREATE TABLE chore_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    lease_until timestamptz NOT NULL
);
