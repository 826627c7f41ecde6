// The room's SQLite schema (one database per RoomDO) and reading `meta` at start.
//
// Storage (the DO's own SQLite):
//   events            one row per PDU we hold, with status accepted | rejected | soft_failed.
//                     `stream` (the room's monotonic stream position) is set only for accepted
//                     events: rejected and soft-failed events are never served as part of the room.
//   edges, auth_edges prev_events and auth_events references.
//   extremities       forward extremities (accepted events no accepted event points at yet).
//   state_groups      state snapshots as deltas: a group's state = its parent's state + its own
//   + entries         entries (event_id NULL = key removed). When the deltas since the last
//                     full snapshot would exceed half the state's size, a snapshot is written
//                     instead, so a lookup reads at most ~1.5 × the state (SNAPSHOT_FRACTION).
//                     Each event records the group of the state before it and after it, so state
//                     at any event is answerable without copying state per event.
//   current_state     the resolved state of the room now (mirrors meta.current_group).
//   current_groups    the current (resolved) state group from each stream position on where it
//                     changed: what /sync and /members?at= show at a position, over every
//                     forward extremity rather than the branch of the event at that position.
//   memberships       membership history (accepted member events in stream order) for history
//   forgotten         per user: the member event at which they forgot the room (POST /forget).
//   erased_senders    users whose events are served redacted to later joiners (erasure).
//   meta              room_id, room_version, server_name, stream, current_group, hub_done,
//                     member_counts, partial marks of an invite/knock-only room, schema (see
//                     openSchema).
//
// Only CREATE statements here (and the schema version they are recorded by); every data change
// goes through writer.ts (the write door).
import { DELAYED_STATE_WATCH_SCHEMA } from "../delayed-state-watch";
import { formatMemberCounts, MEMBER_COUNTS_SQL, type MemberCountsRow } from "./member-counts";

const META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";
export const SCHEMA = `
${META_TABLE}
CREATE TABLE IF NOT EXISTS events (
  event_id TEXT PRIMARY KEY,
  stream INTEGER UNIQUE,
  depth INTEGER NOT NULL,
  type TEXT NOT NULL,
  state_key TEXT,
  sender TEXT NOT NULL,
  origin_server_ts INTEGER NOT NULL,
  pdu TEXT NOT NULL,
  status TEXT NOT NULL,
  rejection_reason TEXT,
  state_before INTEGER,
  state_after INTEGER,
  prev_state TEXT,
  txn_device TEXT,
  txn_id TEXT,
  received_ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(origin_server_ts) WHERE stream IS NOT NULL;
-- events_relation also serves lookups by the related event ID alone (its first column); the
-- index on that column alone was one more page written per event, and with it a local send
-- wrote 16 existing pages in its transaction, past the 64 KiB SQLite keeps a savepoint's
-- journal in memory: every send created and deleted a temporary file (docs/benchmarks.md).
DROP INDEX IF EXISTS events_relates_to;
CREATE INDEX IF NOT EXISTS events_relation ON events(json_extract(pdu, '$.content."m.relates_to".event_id'), json_extract(pdu, '$.content."m.relates_to".rel_type')) WHERE stream IS NOT NULL;
CREATE TABLE IF NOT EXISTS edges (event_id TEXT NOT NULL, prev_event_id TEXT NOT NULL, PRIMARY KEY (event_id, prev_event_id));
CREATE INDEX IF NOT EXISTS edges_prev ON edges(prev_event_id);
CREATE TABLE IF NOT EXISTS auth_edges (event_id TEXT NOT NULL, auth_event_id TEXT NOT NULL, PRIMARY KEY (event_id, auth_event_id));
CREATE TABLE IF NOT EXISTS extremities (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_groups (id INTEGER PRIMARY KEY, parent INTEGER, chain INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state_group_entries (
  group_id INTEGER NOT NULL, type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT,
  PRIMARY KEY (group_id, type, state_key)
);
-- meta 'member_counts' ("<joined> <invited>" of current_state, room/member-counts.ts) is kept by
-- the writer with the current state; a room from before it counts them at its next start.
CREATE TABLE IF NOT EXISTS current_state (type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (type, state_key));
CREATE TABLE IF NOT EXISTS memberships (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, membership TEXT NOT NULL, stream INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS memberships_user ON memberships(user_id, stream);
CREATE TABLE IF NOT EXISTS redactions (redacts TEXT NOT NULL, event_id TEXT NOT NULL, sender TEXT NOT NULL, powerful INTEGER NOT NULL, PRIMARY KEY (redacts, event_id));
CREATE TABLE IF NOT EXISTS txns (user_id TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (user_id, device_id, txn_id));
CREATE TABLE IF NOT EXISTS current_groups (stream INTEGER PRIMARY KEY, grp INTEGER);
CREATE TABLE IF NOT EXISTS forgotten (user_id TEXT PRIMARY KEY, member_event_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS erased_senders (user_id TEXT PRIMARY KEY);
-- Partial-state joins: the IDs of the full state being fetched (room/partial-sync.ts), and each
-- event once fetched; emptied when the state completes.
CREATE TABLE IF NOT EXISTS partial_fetch (event_id TEXT PRIMARY KEY, in_state INTEGER NOT NULL, pdu TEXT);
`;

/** Every table and index of the room, including those of modules with their own concern. */
const ROOM_SCHEMA = SCHEMA + DELAYED_STATE_WATCH_SCHEMA;

/** The schema's version: a hash of its text, so that any edit to it (a new table or index)
 *  makes every room run it again at its next start. */
export const SCHEMA_VERSION = fnv1a(ROOM_SCHEMA);

/** At start: the `meta` table (read with one statement), after creating the schema only when the
 *  room's recorded version is not the current one (a new room, a room from before a schema
 *  change, or one from before versions were recorded). Running the ~20 CREATE ... IF NOT EXISTS
 *  statements on every start was part of every cold RoomDO's cost (a cold first /sync starts
 *  one per room). */
export function openSchema(sql: SqlStorage): Map<string, string> {
  let meta: Map<string, string>;
  try {
    meta = readMeta(sql);
  } catch {
    // A new room: no tables yet (reading first spares every later start a CREATE statement).
    sql.exec(META_TABLE);
    meta = readMeta(sql);
  }
  if (meta.get("schema") === SCHEMA_VERSION) return meta;
  sql.exec(ROOM_SCHEMA);
  rebuildExtremities(sql);
  countMembers(sql, meta);
  // Recorded after the statements it stands for (a start that fails between them runs them again).
  sql.exec("INSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", SCHEMA_VERSION);
  return readMeta(sql);
}

/** The room's storage at start: `meta` and the SqlStorage every module uses. A new database
 *  (no tables) gets no schema here: it is created by the first statement run on it
 *  (schemaOnFirstStatement), which for createRoom is inside the room's one transaction — the
 *  tables and the room in one commit, not a commit of ~35 empty pages before the room's own
 *  (one fsync fewer under `wrangler dev`; docs/benchmarks.md "createRoom"). */
export function openRoomStorage(sql: SqlStorage, alsoRead?: { key: string; sql: string }): { sql: SqlStorage; meta: Map<string, string> } {
  // A database of one page holds no table (page 1 is sqlite_master; every table and index has a
  // root page of its own): a new object, whose read of `meta` would only fail — a thrown error
  // through the runtime, ~0.2 ms of every createRoom's CPU (docs/benchmarks.md "createRoom III").
  if (sql.databaseSize <= NO_TABLES_BYTES) return { sql: schemaOnFirstStatement(sql), meta: new Map() };
  let meta: Map<string, string>;
  try {
    // (`alsoRead`: one more value read in the same statement, under its key; a room whose tables
    // it reads do not exist (yet) is read without it.)
    meta = alsoRead
      ? new Map(sql.exec<{ key: string; value: string }>(`SELECT key, value FROM meta UNION ALL SELECT ?, (${alsoRead.sql})`, alsoRead.key).toArray().map((r) => [r.key, r.value]))
      : readMeta(sql);
  } catch (e) {
    try {
      if (!alsoRead || /no such table: meta\b/.test(String(e))) throw e;
      meta = readMeta(sql);
    } catch {
      return { sql: schemaOnFirstStatement(sql), meta: new Map() };
    }
  }
  return { sql, meta: meta.get("schema") === SCHEMA_VERSION ? meta : openSchema(sql) };
}

/** The size of a database with no table: its first page alone (SQLite's default page size,
 *  which the runtime keeps; a database with a table is at least two pages). */
const NO_TABLES_BYTES = 4096;

/** `sql` that creates the room's schema (openSchema) before the first statement run through it.
 *  If the transaction that created it rolls back, the tables go with it: a statement that then
 *  finds no table creates them again and is run once more. */
export function schemaOnFirstStatement(sql: SqlStorage): SqlStorage {
  let ready = false;
  const create = () => {
    ready = true;
    createSchema(sql);
  };
  const exec = (query: string, ...bindings: unknown[]) => {
    if (!ready) create();
    try {
      return sql.exec(query, ...bindings);
    } catch (e) {
      if (!/no such table/.test(String(e)) || hasMeta(sql)) throw e;
      create();
      return sql.exec(query, ...bindings);
    }
  };
  return new Proxy(sql, {
    get(target, prop) {
      if (prop === "exec") return exec;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** The schema of a database without `meta` — without tables, as `meta` came with the first
 *  RoomDO — and its version, in one statement list: nothing to read back or bring up to date
 *  (openSchema's three reads of `meta`, the one that fails first, and its checks of older
 *  layouts are for rooms that have tables; they were ~0.7 ms of a createRoom's CPU). */
function createSchema(sql: SqlStorage): void {
  // (workerd binds the parameters of a statement list to its last statement.)
  sql.exec(`${ROOM_SCHEMA}\nINSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value;`, SCHEMA_VERSION);
}

function hasMeta(sql: SqlStorage): boolean {
  return sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").toArray().length > 0;
}

/** Rooms from before `extremities` was WITHOUT ROWID: the table rebuilt as one b-tree (a rowid
 *  table with a TEXT key is two, the rows and the key's index: a send changed a page of each;
 *  see events_relation above for why pages per send count). A few rows; in the start's
 *  implicit transaction with the schema. */
function rebuildExtremities(sql: SqlStorage): void {
  const ddl = sql.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'extremities'").one().sql;
  if (/WITHOUT ROWID/i.test(ddl)) return;
  sql.exec(`CREATE TABLE extremities_w (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT INTO extremities_w (event_id) SELECT event_id FROM extremities;
    DROP TABLE extremities;
    ALTER TABLE extremities_w RENAME TO extremities;`);
}

/** A room from before the writer kept its member counts in `meta` (room/member-counts.ts), or a
 *  new one (none yet): counted once, with the schema change. */
function countMembers(sql: SqlStorage, meta: Map<string, string>): void {
  // (A database without a room yet has no current state: the writer counts from nothing.)
  if (meta.has("member_counts") || !meta.has("room_id")) return;
  const counts = sql.exec<MemberCountsRow>(MEMBER_COUNTS_SQL).one();
  sql.exec("INSERT INTO meta (key, value) VALUES ('member_counts', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", formatMemberCounts(counts));
}

/** 32-bit FNV-1a of a string, in hex. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** The `meta` table as a map (read at start and after a rolled-back write). */
export function readMeta(sql: SqlStorage): Map<string, string> {
  return new Map(sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray().map((r) => [r.key, r.value]));
}
