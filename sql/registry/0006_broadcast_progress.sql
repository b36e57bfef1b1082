-- When a church's broadcasts are next expected to make progress. A mark
-- starts due now; a turn that sent something, or found nothing it may send
-- yet, moves it with due_at to when the church has work again. The lease a
-- turn takes moves due_at only, so a church whose turns keep failing, or
-- that no dispatcher takes, keeps a progress_due_at in the past: how far in
-- the past is steeple_broadcast_stall_seconds.
ALTER TABLE broadcast_tenants ADD COLUMN progress_due_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX broadcast_tenants_progress_due ON broadcast_tenants (progress_due_at);
