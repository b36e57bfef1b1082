-- Registry migrations, applied in this order. Never edit an applied file:
-- add a new one (its checksum is recorded and checked).
return {
    "0001_tenants.sql",
    "0002_admin_emails.sql",
    "0003_messaging.sql",
    "0004_church_settings.sql",
    "0005_broadcasts.sql",
    "0006_broadcast_progress.sql",
    "0007_chore_leases.sql",
}
