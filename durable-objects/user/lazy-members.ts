// What each device has been sent of rooms' member events under lazy-loading, kept in the user's
// hub (UserDO) so /sync can leave out redundant members (spec: Client-Server API "Lazy-loading
// room members": "the server MAY assume that clients will remember membership events they have
// already been sent, and choose to skip sending membership events for members whose membership
// has not changed"; `include_redundant_members: true` turns this off).
//
// One row per (device, room, member): the member event this device last received for that user
// and `upos`, the next_batch position of the response that carried it. Tokens can be replayed (a
// client retrying the same `since` after a lost response), so a row counts only for a request
// whose `since` is at or after its `upos`: presenting that token proves the client got the
// response. A retried request therefore gets the same members again. The event ID must match
// too: a member whose membership changed since is sent again. Anything that is not provably held
// by the client is sent; dropping rows only costs bytes, never a missing member.
//
// Reset by an initial sync of the device (the client starts over), removed with the device, and
// pruned for devices that have not synced for a day (see the compaction in position-log.ts).
import type { LazyMembersRoom } from "../../src/rpc/user";

export const LAZY_MEMBERS_SCHEMA = `
CREATE TABLE IF NOT EXISTS lazy_members (device_id TEXT NOT NULL, room_id TEXT NOT NULL, user_id TEXT NOT NULL,
  event_id TEXT NOT NULL, upos INTEGER NOT NULL, PRIMARY KEY (device_id, room_id, user_id));
`;


/** Decide which candidates are redundant for a device syncing from `sincePos` (undefined: an
 *  initial sync, nothing is redundant) and record what the response at `nextPos` carries.
 *  Returns, per room, the users whose member event to leave out. */
export function settleLazyMembers(sql: SqlStorage, deviceId: string, sincePos: number | undefined, nextPos: number, rooms: LazyMembersRoom[]): Record<string, string[]> {
  const redundant: Record<string, string[]> = {};
  for (const r of rooms) {
    const drop: string[] = [];
    const users = Object.keys(r.candidates);
    if (sincePos !== undefined && users.length) {
      for (const u of users) {
        const row = sql
          .exec<{ event_id: string; upos: number }>("SELECT event_id, upos FROM lazy_members WHERE device_id = ? AND room_id = ? AND user_id = ?", deviceId, r.roomId, u)
          .toArray()[0];
        if (row && row.event_id === r.candidates[u] && row.upos <= sincePos) drop.push(u);
      }
    }
    if (drop.length) redundant[r.roomId] = drop;
    const dropped = new Set(drop);
    const record: [string, string][] = [...Object.entries(r.candidates).filter(([u]) => !dropped.has(u)), ...Object.entries(r.sent)];
    for (const [u, eventId] of record) {
      sql.exec(
        "INSERT INTO lazy_members (device_id, room_id, user_id, event_id, upos) VALUES (?, ?, ?, ?, ?) ON CONFLICT(device_id, room_id, user_id) DO UPDATE SET event_id = excluded.event_id, upos = excluded.upos",
        deviceId,
        r.roomId,
        u,
        eventId,
        nextPos,
      );
    }
  }
  return redundant;
}

/** An initial sync of the device, or the device deleted: forget what it was sent. */
export function forgetLazyMembers(sql: SqlStorage, deviceId: string): void {
  // Read first: a write holds the /sync response until storage confirms it.
  if (sql.exec("SELECT 1 FROM lazy_members WHERE device_id = ? LIMIT 1", deviceId).toArray().length) sql.exec("DELETE FROM lazy_members WHERE device_id = ?", deviceId);
}

/** Rows of devices without a sync mark at or after `since` (ms): they would only be used again
 *  by a device that comes back with an old token, which then gets its members resent. */
export function pruneLazyMembers(sql: SqlStorage, since: number): void {
  sql.exec("DELETE FROM lazy_members WHERE device_id NOT IN (SELECT device_id FROM sync_marks WHERE ts >= ?)", since);
}
