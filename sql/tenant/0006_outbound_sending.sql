-- Outbound messages whose try is under way (status sending): next_attempt_at
-- is the try's deadline, after which the sweep reports the outcome as unknown.
CREATE INDEX IF NOT EXISTS messages_sending ON messages (next_attempt_at) WHERE status = 'sending';
