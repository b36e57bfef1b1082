-- Outbound messages that reach a number even after it opted out: the
-- confirmation of a STOP and the answer to HELP. Every other message to a
-- suppressed or opted-out number fails instead of being sent.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS opt_out_exempt boolean NOT NULL DEFAULT false;
