-- A conversation's last activity, preview and unread count follow its
-- messages: one trigger, so that storing a message is one statement and a
-- duplicate (ON CONFLICT DO NOTHING inserts no row) changes nothing.
CREATE FUNCTION conversation_after_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations SET
        last_message_at = greatest(last_message_at, NEW.created_at),
        last_message_preview = left(CASE WHEN NEW.text <> '' THEN NEW.text ELSE '[media]' END, 160),
        unread_count = unread_count + CASE WHEN NEW.direction = 'inbound' THEN 1 ELSE 0 END
    WHERE id = NEW.conversation_id;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_conversation AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION conversation_after_message();
