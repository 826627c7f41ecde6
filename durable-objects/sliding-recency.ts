// Simplified Sliding Sync (MSC4186) inside the user's hub: the recency index. One row per room
// of the user in `sliding_rooms`, kept up to date as room notices land (noteSlidingRoom), with
// everything a list filters on as columns: recency (`bump`, the hub position of the room's last
// bump event), membership and inviter (copied from `rooms`), encryption, room type and whether
// the room is a DM (from m.direct). A list window is then one `ORDER BY bump DESC, room_id LIMIT`
// read and its count one `COUNT(*)`, instead of loading every room of the user per request
// (that cost ~8–10 ms per 1,000 rooms, docs/benchmarks.md).
import type { JsonObject } from "../src/core/types";
import { BUMP_EVENT_TYPES, type ListFilters, type Range, type SlidingMembership } from "../src/core/sliding-lists";
import type { HubRoom } from "../src/rpc/sliding";

export const RECENCY_SCHEMA = `
CREATE TABLE IF NOT EXISTS sliding_rooms (room_id TEXT PRIMARY KEY, bump INTEGER NOT NULL, encrypted INTEGER NOT NULL DEFAULT 0, rtype TEXT);
CREATE TABLE IF NOT EXISTS sliding_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

/** Columns added in version 2 (the index); a hub from before gets them and a refresh once. */
const V2 = [
  "ALTER TABLE sliding_rooms ADD COLUMN membership TEXT NOT NULL DEFAULT 'join'",
  "ALTER TABLE sliding_rooms ADD COLUMN inviter TEXT",
  "ALTER TABLE sliding_rooms ADD COLUMN is_dm INTEGER NOT NULL DEFAULT 0",
  // Windows of unfiltered lists, of is_dm lists and of invite lists: each an index walk that
  // stops at the LIMIT.
  "CREATE INDEX IF NOT EXISTS sliding_rooms_recency ON sliding_rooms(bump DESC, room_id)",
  "CREATE INDEX IF NOT EXISTS sliding_rooms_dm ON sliding_rooms(is_dm, bump DESC, room_id)",
  "CREATE INDEX IF NOT EXISTS sliding_rooms_membership ON sliding_rooms(membership, bump DESC, room_id)",
];

function getMeta(sql: SqlStorage, key: string): string | undefined {
  return sql.exec<{ value: string }>("SELECT value FROM sliding_meta WHERE key = ?", key).toArray()[0]?.value;
}
function setMeta(sql: SqlStorage, key: string, value: string | number): void {
  sql.exec("INSERT INTO sliding_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
}

/** Schema, and the one-time upgrade of a hub whose sliding_rooms predates the index. Called
 *  from the hub's constructor (after the hub's own schema). */
export function initRecency(sql: SqlStorage): void {
  sql.exec(RECENCY_SCHEMA);
  if (getMeta(sql, "version") === "2") return;
  const cols = new Set(sql.exec<{ name: string }>("PRAGMA table_info(sliding_rooms)").toArray().map((c) => c.name));
  for (const stmt of V2) {
    const col = /ADD COLUMN (\w+)/.exec(stmt)?.[1];
    if (col && cols.has(col)) continue;
    sql.exec(stmt);
  }
  refreshRecency(sql);
  setMeta(sql, "version", 2);
}

/** Make every room of `rooms` have its row, with membership and inviter as `rooms` has them
 *  (after the hub adopted rooms without notices: its bootstrap from the D1 mirror). A room
 *  without a bump event yet takes its newest logged position. */
export function refreshRecency(sql: SqlStorage): void {
  sql.exec(
    `INSERT INTO sliding_rooms (room_id, bump, membership, inviter)
       SELECT r.room_id, COALESCE((SELECT MAX(upos) FROM room_log l WHERE l.room_id = r.room_id), 0), r.membership, r.inviter FROM rooms r WHERE true
     ON CONFLICT(room_id) DO UPDATE SET bump = CASE WHEN sliding_rooms.bump = 0 THEN excluded.bump ELSE sliding_rooms.bump END,
       membership = excluded.membership, inviter = excluded.inviter`,
  );
  // New rows: is_dm is recomputed at the next request.
  sql.exec("DELETE FROM sliding_meta WHERE key = 'direct'");
}

/** A room notice as the recency index sees it. */
export interface SlidingNote {
  upos: number;
  ev: { type: string; state_key?: string; content: JsonObject };
  encrypted: boolean | undefined;
}

/** Record notices of one room, in position order, in the index (inside the hub's notice
 *  transaction, after `rooms` was updated for them): one upsert for the run, with the row each
 *  notice in turn would have left. */
export function noteSlidingRoom(sql: SqlStorage, me: string, roomId: string, notes: SlidingNote[]): void {
  if (notes.length === 0) return;
  // MSC4186 bump_stamp: the default bump event types; my own membership changes bump too, so
  // an invite or a fresh join shows at the top. A room's first row (or one still at 0) takes
  // the first notice's position even when it is no bump event (the room has to sort somewhere);
  // later notices raise it only when they bump.
  const first = notes[0].upos;
  let bump = 0;
  let encrypted = false;
  for (const n of notes) {
    if (BUMP_EVENT_TYPES.has(n.ev.type) || (n.ev.type === "m.room.member" && n.ev.state_key === me)) bump = Math.max(bump, n.upos);
    if (n.encrypted) encrypted = true;
  }
  // A new row goes in with is_dm -1 (the update leaves is_dm alone), so the upsert itself says
  // whether the row is new; -1 never outlives this transaction.
  const upserted = sql
    .exec<{ is_dm: number }>(
      `INSERT INTO sliding_rooms (room_id, bump, encrypted, membership, inviter, is_dm)
         SELECT room_id, MAX(?2, ?4), ?3, membership, inviter, -1 FROM rooms WHERE room_id = ?1
       ON CONFLICT(room_id) DO UPDATE SET
         bump = CASE WHEN sliding_rooms.bump = 0 THEN MAX(?2, ?4) ELSE MAX(sliding_rooms.bump, ?4) END,
         encrypted = MAX(sliding_rooms.encrypted, excluded.encrypted), membership = excluded.membership, inviter = excluded.inviter
       RETURNING is_dm`,
      roomId,
      first,
      encrypted ? 1 : 0,
      bump,
    )
    .toArray()[0];
  if (upserted?.is_dm === -1) {
    // is_dm of a new room, from m.direct as it is (syncDirect follows later changes of it).
    sql.exec(
      `UPDATE sliding_rooms SET is_dm = EXISTS (SELECT 1 FROM account_data a, json_each(a.content) d, json_each(d.value) x
         WHERE a.room_id = '' AND a.type = 'm.direct' AND json_valid(a.content) AND d.type = 'array' AND x.value = ?1) WHERE room_id = ?1`,
      roomId,
    );
  }
  for (const { ev } of notes) {
    if (ev.type === "m.room.create" && ev.state_key === "") learnRoomType(sql, roomId, typeof ev.content.type === "string" ? ev.content.type : null);
  }
}

/** A room's type, learned from its create event (a notice, or the RoomDO via the Worker). */
export function learnRoomType(sql: SqlStorage, roomId: string, type: string | null): void {
  sql.exec("UPDATE sliding_rooms SET rtype = ? WHERE room_id = ?", type ?? "", roomId);
}

/** Keep `is_dm` equal to m.direct (module "Direct Messaging"): recomputed only when m.direct
 *  changed since the last computation (O(rooms) then; a request otherwise reads one row). */
export function syncDirect(sql: SqlStorage): void {
  const row = sql.exec<{ upos: number }>("SELECT upos FROM account_data WHERE room_id = '' AND type = 'm.direct'").toArray()[0];
  const mark = String(row?.upos ?? -1);
  if (getMeta(sql, "direct") === mark) return;
  const content = sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = '' AND type = 'm.direct'").toArray()[0]?.content;
  const direct = new Set<string>();
  if (content) {
    for (const ids of Object.values(JSON.parse(content) as Record<string, unknown>)) if (Array.isArray(ids)) for (const id of ids) if (typeof id === "string") direct.add(id);
  }
  const list = JSON.stringify([...direct]);
  sql.exec("UPDATE sliding_rooms SET is_dm = (room_id IN (SELECT value FROM json_each(?1))) WHERE is_dm != (room_id IN (SELECT value FROM json_each(?1)))", list);
  setMeta(sql, "direct", mark);
}

/** One room as a list window returns it (the Worker's HubRoom, src/rpc/sliding.ts). */
export type IndexedRoom = HubRoom;

/** Which rooms a request's lists may show at all. */
export interface Candidates {
  /** Rooms left (or banned from) since the connection's position that it was shown before: they
   *  are shown once more, with their last events (then they drop out). */
  newlyLeft: string[];
  /** Module "Ignoring Users": invites from these users are not shown. */
  ignored: string[];
}

const json = (xs: unknown[]) => JSON.stringify(xs);

/** WHERE clause (on sliding_rooms `s`) and its parameters for the candidates plus filters. */
function where(c: Candidates, f: ListFilters | undefined, inSpaces: string[] | undefined): { sql: string; args: unknown[] } {
  const terms: string[] = [];
  const args: unknown[] = [];
  // `+s.membership`: keep the planner on the recency index unless a filter picks an index of
  // its own (an invite list: the membership index; is_dm: the DM index).
  if (c.newlyLeft.length) {
    terms.push("(+s.membership IN ('join', 'invite', 'knock') OR s.room_id IN (SELECT value FROM json_each(?)))");
    args.push(json(c.newlyLeft));
  } else terms.push("+s.membership IN ('join', 'invite', 'knock')");
  if (c.ignored.length) {
    terms.push("NOT (+s.membership = 'invite' AND s.inviter IS NOT NULL AND s.inviter IN (SELECT value FROM json_each(?)))");
    args.push(json(c.ignored));
  }
  if (f?.is_dm !== undefined) terms.push(`s.is_dm = ${f.is_dm ? 1 : 0}`);
  if (f?.is_invite !== undefined) terms.push(f.is_invite ? "s.membership = 'invite'" : "+s.membership != 'invite'");
  if (f?.is_encrypted !== undefined) terms.push(`s.encrypted = ${f.is_encrypted ? 1 : 0}`);
  // room_types: null in the list means rooms without a type (MSC4186 filters); a room whose
  // type could not be learned counts as untyped.
  const typeTerm = (types: (string | null)[]) => {
    const named = types.filter((t): t is string => t !== null);
    const parts: string[] = [];
    if (types.includes(null)) parts.push("COALESCE(s.rtype, '') = ''");
    if (named.length) {
      // COALESCE: an unknown type (NULL) must give false, not NULL, or NOT(...) drops the room.
      parts.push("COALESCE(s.rtype, '') IN (SELECT value FROM json_each(?))");
      args.push(json(named));
    }
    return parts.length ? `(${parts.join(" OR ")})` : "0";
  };
  if (f?.room_types !== undefined) terms.push(typeTerm(f.room_types));
  if (f?.not_room_types !== undefined) terms.push(`NOT ${typeTerm(f.not_room_types)}`);
  if (f?.spaces !== undefined) {
    terms.push("s.room_id IN (SELECT value FROM json_each(?))");
    args.push(json(inSpaces ?? []));
  }
  return { sql: terms.join(" AND "), args };
}

type Row = { room_id: string; membership: string; stream: number; inviter: string | null; bump: number; encrypted: number; rtype: string | null; is_dm: number };
// CROSS JOIN: sliding_rooms drives (its index gives the order), rooms is looked up per row.
const COLUMNS = "s.room_id, s.membership, r.stream, s.inviter, s.bump, s.encrypted, s.rtype, s.is_dm";

function toRoom(r: Row): IndexedRoom {
  return {
    roomId: r.room_id,
    membership: r.membership as SlidingMembership,
    stream: r.stream,
    bump: r.bump,
    encrypted: !!r.encrypted,
    inviter: r.inviter,
    roomType: r.rtype === null ? undefined : r.rtype === "" ? null : r.rtype,
    isDm: !!r.is_dm,
  };
}

/** A list's view: how many rooms match, and the rooms inside its ranges (inclusive, clamped,
 *  most recent first; ties by room ID so the order is total and stable across requests). */
export function listWindow(sql: SqlStorage, c: Candidates, f: ListFilters | undefined, ranges: Range[], inSpaces?: string[]): { count: number; window: IndexedRoom[] } {
  const w = where(c, f, inSpaces);
  const count = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM sliding_rooms s WHERE ${w.sql}`, ...w.args).one().n;
  const seen = new Set<string>();
  const window: IndexedRoom[] = [];
  for (const [a, b] of ranges) {
    if (a >= count) continue;
    const rows = sql
      .exec<Row>(
        `SELECT ${COLUMNS} FROM sliding_rooms s CROSS JOIN rooms r ON r.room_id = s.room_id WHERE ${w.sql}
         ORDER BY s.bump DESC, s.room_id LIMIT ? OFFSET ?`,
        ...w.args,
        Math.min(b, count - 1) - a + 1,
        a,
      )
      .toArray();
    // Overlapping ranges: a room is listed once, where it first appears.
    for (const r of rows) if (!seen.has(r.room_id)) (seen.add(r.room_id), window.push(toRoom(r)));
  }
  return { count, window };
}

/** The given rooms (room subscriptions) when they are candidates. */
export function roomsByIds(sql: SqlStorage, c: Candidates, ids: string[]): IndexedRoom[] {
  if (!ids.length) return [];
  const w = where(c, undefined, undefined);
  return sql
    .exec<Row>(`SELECT ${COLUMNS} FROM sliding_rooms s CROSS JOIN rooms r ON r.room_id = s.room_id WHERE s.room_id IN (SELECT value FROM json_each(?)) AND ${w.sql}`, json(ids), ...w.args)
    .toArray()
    .map(toRoom);
}

/** Candidate rooms whose type the hub does not know (a room_types filter needs them). */
export function unknownTypes(sql: SqlStorage, c: Candidates): string[] {
  const w = where(c, undefined, undefined);
  return sql.exec<{ room_id: string }>(`SELECT s.room_id FROM sliding_rooms s WHERE s.rtype IS NULL AND ${w.sql}`, ...w.args).toArray().map((r) => r.room_id);
}

/** Rooms whose membership became leave or ban after hub position `from` (still so now). */
export function leftSince(sql: SqlStorage, from: number): string[] {
  return sql
    .exec<{ room_id: string }>(
      `SELECT DISTINCT m.room_id FROM membership_log m JOIN sliding_rooms s ON s.room_id = m.room_id
       WHERE m.upos > ? AND s.membership IN ('leave', 'ban')`,
      from,
    )
    .toArray()
    .map((r) => r.room_id);
}
