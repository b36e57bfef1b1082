-- Members' messages: a conversation is the thread between the church's
-- number and one contact's number.
CREATE TABLE contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    phone_number text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    contact_id uuid NOT NULL UNIQUE REFERENCES contacts (id) ON DELETE CASCADE,
    last_message_at timestamptz NOT NULL DEFAULT now(),
    last_message_preview text NOT NULL DEFAULT '',
    unread_count integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The conversation list: newest activity first, keyset-paged.
CREATE INDEX conversations_activity ON conversations (last_message_at DESC, id DESC);

CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number text NOT NULL,
    to_number text NOT NULL,
    text text NOT NULL DEFAULT '',
    media jsonb NOT NULL DEFAULT '[]',
    status text NOT NULL CHECK (status IN ('received', 'queued', 'sending', 'sent', 'delivered',
        'sending_failed', 'delivery_failed', 'delivery_unconfirmed', 'failed')),
    -- the provider's id: unique, so a webhook delivered twice stores one message
    provider_message_id text UNIQUE,
    send_attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A conversation's messages: newest first, keyset-paged.
CREATE INDEX messages_conversation ON messages (conversation_id, created_at DESC, id DESC);
-- Outbound messages waiting to be sent (after a restart too).
CREATE INDEX messages_outbox ON messages (next_attempt_at) WHERE status = 'queued';
