-- A recipient moving between pending and sending (claimed, or given back)
-- changes none of its broadcast's counts, yet the counts trigger rewrote the
-- broadcast's row for it: on every claim, so that every sender of the
-- broadcast queued on that row's lock. The trigger now fires only for a
-- change that moves a count.
DROP TRIGGER broadcast_recipients_count ON broadcast_recipients;
CREATE TRIGGER broadcast_recipients_count AFTER UPDATE ON broadcast_recipients
    FOR EACH ROW
    WHEN ((OLD.state IS DISTINCT FROM NEW.state
           AND NOT (OLD.state IN ('pending', 'sending') AND NEW.state IN ('pending', 'sending')))
          OR OLD.delivery IS DISTINCT FROM NEW.delivery OR OLD.replied IS DISTINCT FROM NEW.replied)
    EXECUTE FUNCTION broadcast_recipients_count();
