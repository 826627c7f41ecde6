// The sync hub's storage (this DO's SQLite), and which module of durable-objects/user/ writes
// each table:
//   meta           epoch, pos, user_id (stream.ts), log_floor (position-log.ts), push rules
//                  as JSON (settings.ts), bootstrapped (fan-in.ts)
//   room_log       (upos, room_id, stream): one row per change of a room for this user;
//                  stream NULL for non-timeline changes (ephemeral, room account data, counts)
//                  — position-log.ts appends and compacts it
//   rooms          current membership per room (+ stream of that member event, inviter,
//                  display name in the room) — fan-in.ts
//   membership_log (upos, room_id, membership, stream): own membership history, for "what was my
//                  membership at token P" — fan-in.ts
//   room_events    (room_id, stream, event_id, thread_id, notify, highlight): push-rule outcome
//                  of every event fanned out here; unread counts and receipts use it — fan-in.ts
//   read_marks     (room_id, thread_id, stream): where my read receipts are — ephemeral.ts
//   receipts       latest receipt per (room, user, type, thread) seen in my rooms — ephemeral.ts
//   account_data   global ('' room) and per-room account data — settings.ts
//   filters        POST /user/{userId}/filter — settings.ts
//   presence       presence of me and of users I share a room with — presence.ts
//   to_device      inbox, per device; deleted once the client syncs past it — e2ee-inbox.ts
//   device_lists   users whose devices changed / who I no longer share an encrypted room with
//                  (latest entry per user, for /sync) — e2ee-inbox.ts
//   device_list_log every such entry by position (GET /keys/changes between two tokens) —
//                  e2ee-inbox.ts writes, position-log.ts compacts
//   device_keys    per-device one-time key counts and unused fallback key types — e2ee-inbox.ts
//   sync_marks     per device: the oldest token it may still present (its last `since`, or the
//                  token of its initial sync) and when that was recorded — position-log.ts
//   forgotten_rooms rooms forgotten at a given membership (POST /forget) — fan-in.ts
//   lazy_members   per device, room and member: the member event last sent under lazy-loading
//                  and the token that carried it (lazy-members.ts)
//   push_targets, push_outbox   push delivery (push-outbox.ts)
//   thread_subscriptions  MSC4306 thread subscriptions, one row per thread — thread-subscriptions.ts
//   sliding_*      Simplified Sliding Sync: connections and the recency index
//                  (durable-objects/sliding-conn.ts, sliding-recency.ts)

export const HUB_SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS room_log (upos INTEGER PRIMARY KEY, room_id TEXT NOT NULL, stream INTEGER);
CREATE INDEX IF NOT EXISTS room_log_room_stream ON room_log(room_id, upos, stream);
DROP INDEX IF EXISTS room_log_room;
CREATE TABLE IF NOT EXISTS rooms (room_id TEXT PRIMARY KEY, membership TEXT NOT NULL, member_stream INTEGER NOT NULL,
  stream INTEGER NOT NULL, inviter TEXT, display_name TEXT);
CREATE TABLE IF NOT EXISTS membership_log (upos INTEGER PRIMARY KEY, room_id TEXT NOT NULL, membership TEXT NOT NULL, stream INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS membership_log_room ON membership_log(room_id, upos);
CREATE TABLE IF NOT EXISTS room_events (room_id TEXT NOT NULL, stream INTEGER NOT NULL, event_id TEXT NOT NULL, thread_id TEXT,
  notify INTEGER NOT NULL, highlight INTEGER NOT NULL, actions TEXT, ts INTEGER NOT NULL, upos INTEGER NOT NULL,
  PRIMARY KEY (room_id, stream));
CREATE INDEX IF NOT EXISTS room_events_id ON room_events(event_id);
CREATE INDEX IF NOT EXISTS room_events_notify ON room_events(upos) WHERE notify = 1;
CREATE INDEX IF NOT EXISTS room_events_unread ON room_events(room_id, stream) WHERE notify = 1;
CREATE TABLE IF NOT EXISTS read_marks (room_id TEXT NOT NULL, thread_id TEXT NOT NULL, stream INTEGER NOT NULL, PRIMARY KEY (room_id, thread_id));
CREATE TABLE IF NOT EXISTS receipts (room_id TEXT NOT NULL, user_id TEXT NOT NULL, rtype TEXT NOT NULL, thread_id TEXT NOT NULL,
  event_id TEXT NOT NULL, ts INTEGER NOT NULL, upos INTEGER NOT NULL, PRIMARY KEY (room_id, user_id, rtype, thread_id));
CREATE INDEX IF NOT EXISTS receipts_upos ON receipts(upos);
CREATE TABLE IF NOT EXISTS account_data (room_id TEXT NOT NULL, type TEXT NOT NULL, content TEXT NOT NULL, upos INTEGER NOT NULL,
  PRIMARY KEY (room_id, type));
CREATE INDEX IF NOT EXISTS account_data_upos ON account_data(upos);
CREATE TABLE IF NOT EXISTS filters (id INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presence (user_id TEXT PRIMARY KEY, presence TEXT NOT NULL, status_msg TEXT, last_active_ts INTEGER NOT NULL,
  upos INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS to_device (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, upos INTEGER NOT NULL,
  sender TEXT NOT NULL, type TEXT NOT NULL, content TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS to_device_dev ON to_device(device_id, upos);
CREATE TABLE IF NOT EXISTS device_lists (user_id TEXT PRIMARY KEY, upos INTEGER NOT NULL, left INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_list_log (upos INTEGER NOT NULL, user_id TEXT NOT NULL, left INTEGER NOT NULL, PRIMARY KEY (upos, user_id));
CREATE TABLE IF NOT EXISTS device_keys (device_id TEXT PRIMARY KEY, otk_counts TEXT NOT NULL, fallback_types TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS device_list_log_user ON device_list_log(user_id, upos);
CREATE TABLE IF NOT EXISTS sync_marks (device_id TEXT PRIMARY KEY, upos INTEGER NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS forgotten_rooms (room_id TEXT PRIMARY KEY, member_stream INTEGER NOT NULL);
`;
