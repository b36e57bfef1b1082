-- Broadcasts: one text to the opted-in members of lists. The audience is
-- fixed when sending starts, one row per broadcast and phone number; the
-- dispatcher claims those rows with a lease, and each links to the
-- conversation message it produced.

CREATE TABLE broadcasts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status text NOT NULL CHECK (status IN ('scheduled', 'sending', 'paused', 'done', 'cancelled')),
    text text NOT NULL,
    media jsonb NOT NULL DEFAULT '[]',
    list_ids uuid[] NOT NULL,
    send_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- the counts: set when the audience is fixed, then kept by the
    -- recipients' trigger, so reading a broadcast never scans its recipients
    recipients integer NOT NULL DEFAULT 0,
    queued integer NOT NULL DEFAULT 0,
    sent integer NOT NULL DEFAULT 0,
    delivered integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    opted_out integer NOT NULL DEFAULT 0,
    replies integer NOT NULL DEFAULT 0
);
-- The list of broadcasts: newest first, keyset-paged.
CREATE INDEX broadcasts_created ON broadcasts (created_at DESC, id DESC);
-- What the dispatcher looks at.
CREATE INDEX broadcasts_active ON broadcasts (send_at) WHERE status IN ('scheduled', 'sending');

CREATE TABLE broadcast_recipients (
    broadcast_id uuid NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    phone_number text NOT NULL,
    contact_id uuid NOT NULL REFERENCES contacts (id),
    -- the recipient's time zone for quiet hours (area code, else the church's)
    time_zone text NOT NULL,
    -- pending: to send from not_before on; sending: claimed until
    -- lease_until; sent: accepted by Telnyx; failed: refused, given up, or
    -- its call's outcome unknown; opted_out: skipped; cancelled: the
    -- broadcast was cancelled first
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'opted_out', 'cancelled')),
    -- calls begun; calling: one is under way (set, committed, before the
    -- call): a lease that ends while calling is an outcome never known
    attempts integer NOT NULL DEFAULT 0,
    calling boolean NOT NULL DEFAULT false,
    not_before timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    message_id uuid UNIQUE REFERENCES messages (id),
    -- what the status webhooks said after sent
    delivery text CHECK (delivery IN ('delivered', 'failed')),
    replied boolean NOT NULL DEFAULT false,
    PRIMARY KEY (broadcast_id, phone_number)
);
CREATE INDEX broadcast_recipients_due ON broadcast_recipients (broadcast_id, not_before)
    WHERE state = 'pending';
CREATE INDEX broadcast_recipients_leased ON broadcast_recipients (lease_until)
    WHERE state = 'sending';
-- An inbound message finds the recipients it replies to.
CREATE INDEX broadcast_recipients_unreplied ON broadcast_recipients (phone_number)
    WHERE state = 'sent' AND NOT replied;

-- A broadcast's counts follow its recipients' changes.
CREATE FUNCTION broadcast_recipients_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o broadcast_recipients := OLD;
    n broadcast_recipients := NEW;
BEGIN
    UPDATE broadcasts SET
        queued = queued - (o.state IN ('pending', 'sending'))::int + (n.state IN ('pending', 'sending'))::int,
        sent = sent - (o.state = 'sent')::int + (n.state = 'sent')::int,
        delivered = delivered - (o.delivery IS NOT DISTINCT FROM 'delivered')::int
                              + (n.delivery IS NOT DISTINCT FROM 'delivered')::int,
        failed = failed - (o.state = 'failed' OR o.delivery IS NOT DISTINCT FROM 'failed')::int
                        + (n.state = 'failed' OR n.delivery IS NOT DISTINCT FROM 'failed')::int,
        opted_out = opted_out - (o.state = 'opted_out')::int + (n.state = 'opted_out')::int,
        replies = replies - o.replied::int + n.replied::int
    WHERE id = n.broadcast_id;
    RETURN NULL;
END $$;
CREATE TRIGGER broadcast_recipients_count AFTER UPDATE ON broadcast_recipients
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.delivery IS DISTINCT FROM NEW.delivery
          OR OLD.replied IS DISTINCT FROM NEW.replied)
    EXECUTE FUNCTION broadcast_recipients_count();

-- The status webhooks of a broadcast's message reach its recipient.
CREATE FUNCTION broadcast_message_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE broadcast_recipients SET delivery =
        CASE WHEN NEW.status = 'delivered' THEN 'delivered' ELSE 'failed' END
    WHERE message_id = NEW.id AND state = 'sent';
    RETURN NULL;
END $$;
CREATE TRIGGER broadcast_message_status AFTER UPDATE OF status ON messages
    FOR EACH ROW
    WHEN (NEW.direction = 'outbound' AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('delivered', 'sending_failed', 'delivery_failed'))
    EXECUTE FUNCTION broadcast_message_status();

-- An inbound message is a reply of every recipient of that number whose
-- broadcast message was sent.
CREATE FUNCTION broadcast_reply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE broadcast_recipients SET replied = true
    WHERE phone_number = NEW.from_number AND state = 'sent' AND NOT replied;
    RETURN NULL;
END $$;
CREATE TRIGGER broadcast_reply AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.direction = 'inbound')
    EXECUTE FUNCTION broadcast_reply();
