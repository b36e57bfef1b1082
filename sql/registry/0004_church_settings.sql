-- A church's settings: its time zone (quiet hours, schedules) and the text
-- added to the HELP reply.
ALTER TABLE tenants
    ADD COLUMN time_zone text NOT NULL DEFAULT 'America/New_York',
    ADD COLUMN help_text text NOT NULL DEFAULT '' CHECK (char_length(help_text) <= 300);
