-- The User-Agent of a device's latest request, refreshed with last_seen_ts/last_seen_ip (at most
-- every 5 minutes, src/api/middleware/auth.ts); shown by whois and Synapse's admin device API.
ALTER TABLE `devices` ADD `last_seen_user_agent` text;
