-- Tenant database migrations (every church's database and the template), in
-- this order. Never edit an applied file: add a new one.
return {
    "0001_admins.sql",
    "0002_refresh_tokens.sql",
    "0003_messaging.sql",
    "0004_conversation_counters.sql",
    "0005_refresh_token_families.sql",
    "0006_outbound_sending.sql",
    "0007_contacts.sql",
    "0008_consent_replies.sql",
    "0009_list_member_counts.sql",
    "0010_broadcasts.sql",
    "0011_import_speed.sql",
    "0012_contact_search.sql",
    "0013_broadcast_claim_counts.sql",
    "0014_list_member_check_once_per_list.sql",
}
