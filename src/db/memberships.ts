// The D1 membership mirror `room_memberships`: local users' current membership per room, copied
// from the RoomDOs (the authority) after each commit, for the questions that span rooms (which
// rooms a user is in, who shares a room with whom) without waking every RoomDO. This module owns
// every SQL statement on the table.
//
// `forgotten` (POST /forget): set by the user; a later join, invite or knock clears it (the room
// is theirs again), a leave or ban keeps it.

export interface MirroredMembership {
  roomId: string;
  userId: string;
  membership: string;
  eventId: string;
  stream: number;
  ts: number;
}

/** Upsert one local user's membership (a statement, so the RoomDO can batch several). */
export function upsertMembership(db: D1Database, m: MirroredMembership): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream, updated_ts, forgotten) VALUES (?, ?, ?, ?, ?, ?, 0)
       ON CONFLICT(room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id,
         stream = excluded.stream, updated_ts = excluded.updated_ts,
         forgotten = CASE WHEN excluded.membership IN ('join', 'invite', 'knock') THEN 0 ELSE room_memberships.forgotten END`,
    )
    .bind(m.roomId, m.userId, m.membership, m.eventId, m.stream, m.ts);
}

/** POST /forget: remembered for a hub that is rebuilt (bootstrap skips forgotten rooms). */
export async function markForgotten(db: D1Database, roomId: string, userId: string): Promise<void> {
  await db.prepare("UPDATE room_memberships SET forgotten = 1 WHERE room_id = ? AND user_id = ?").bind(roomId, userId).run();
}

/** A local user's mirrored membership in a room, or null when they never had one. */
export async function mirroredMembership(db: D1Database, roomId: string, userId: string): Promise<string | null> {
  const row = await db.prepare("SELECT membership FROM room_memberships WHERE room_id = ? AND user_id = ?").bind(roomId, userId).first<{ membership: string }>();
  return row?.membership ?? null;
}

export async function isJoinedMirror(db: D1Database, roomId: string, userId: string): Promise<boolean> {
  return !!(await db.prepare("SELECT 1 FROM room_memberships WHERE room_id = ? AND user_id = ? AND membership = 'join'").bind(roomId, userId).first());
}

/** Rooms a local user has this membership in, sorted. */
export async function roomsWithMembership(db: D1Database, userId: string, membership: string): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT room_id FROM room_memberships WHERE user_id = ? AND membership = ? ORDER BY room_id")
    .bind(userId, membership)
    .all<{ room_id: string }>();
  return results.map((r) => r.room_id);
}

/** Rooms where a local user's membership is one of `memberships` (one query). */
export async function roomsWithAnyMembership(db: D1Database, userId: string, memberships: readonly string[]): Promise<string[]> {
  const { results } = await db
    .prepare(`SELECT room_id FROM room_memberships WHERE user_id = ? AND membership IN (${memberships.map(() => "?").join(",")}) ORDER BY room_id`)
    .bind(userId, ...memberships)
    .all<{ room_id: string }>();
  return results.map((r) => r.room_id);
}

/** Every room a local user was ever in (any membership). */
export async function roomsEverJoined(db: D1Database, userId: string): Promise<string[]> {
  const { results } = await db.prepare("SELECT room_id FROM room_memberships WHERE user_id = ?").bind(userId).all<{ room_id: string }>();
  return results.map((r) => r.room_id);
}

/** Up to `limit` rooms `userId` is joined to. */
export async function joinedRoomsUpTo(db: D1Database, userId: string, limit: number): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT room_id FROM room_memberships WHERE user_id = ? AND membership = 'join' LIMIT ?")
    .bind(userId, limit)
    .all<{ room_id: string }>();
  return results.map((r) => r.room_id);
}

/** Up to `limit` rooms with at least one joined local user. */
export async function roomsWithLocalJoins(db: D1Database, limit: number): Promise<string[]> {
  const { results } = await db.prepare("SELECT DISTINCT room_id FROM room_memberships WHERE membership = 'join' LIMIT ?").bind(limit).all<{ room_id: string }>();
  return results.map((r) => r.room_id);
}

/** Up to `limit` registered rooms with a joined local user, most recently active first. */
export async function recentRoomsWithLocalJoins(db: D1Database, limit: number): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT m.room_id AS room_id FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id
       WHERE m.membership = 'join' GROUP BY m.room_id ORDER BY MAX(m.updated_ts) DESC LIMIT ?`,
    )
    .bind(limit)
    .all<{ room_id: string }>();
  return results.map((r) => r.room_id);
}

/** Local users joined to any of `roomIds`, sorted. */
export async function localJoinedMembers(db: D1Database, roomIds: string[]): Promise<string[]> {
  const out = new Set<string>();
  for (let i = 0; i < roomIds.length; i += 80) {
    const chunk = roomIds.slice(i, i + 80);
    const { results } = await db
      .prepare(`SELECT DISTINCT user_id FROM room_memberships WHERE membership = 'join' AND room_id IN (${chunk.map(() => "?").join(",")})`)
      .bind(...chunk)
      .all<{ user_id: string }>();
    for (const r of results) out.add(r.user_id);
  }
  return [...out].sort();
}

/** Other local users joined to a room `userId` is joined to (where their presence goes). */
export async function joinedCoMembers(db: D1Database, userId: string): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT DISTINCT b.user_id FROM room_memberships a JOIN room_memberships b ON a.room_id = b.room_id
       WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join' AND b.user_id != ?`,
    )
    .bind(userId, userId)
    .all<{ user_id: string }>();
  return results.map((r) => r.user_id);
}

// "Share a room" for device lists: `userId` is joined and the other user is joined or invited.

/** Users whose device lists changed in (from, upper] and who share a room with `userId` (or are
 *  `userId`), sorted. */
export async function deviceListChangesSharedWith(db: D1Database, userId: string, from: number, upper: number): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT DISTINCT s.user_id AS user_id FROM device_list_stream s
       WHERE s.stream_id > ?1 AND s.stream_id <= ?2 AND (
         s.user_id = ?3 OR EXISTS (
           SELECT 1 FROM room_memberships mine JOIN room_memberships theirs ON theirs.room_id = mine.room_id
           WHERE mine.user_id = ?3 AND mine.membership = 'join'
             AND theirs.user_id = s.user_id AND theirs.membership IN ('join', 'invite')))`,
    )
    .bind(from, upper, userId)
    .all<{ user_id: string }>();
  return results.map((r) => r.user_id).sort();
}

/** Whether `userId` (joined) shares any room with `other` (joined or invited). */
export async function sharesRoom(db: D1Database, userId: string, other: string): Promise<boolean> {
  const row = await db
    .prepare(
      `SELECT 1 AS x FROM room_memberships mine JOIN room_memberships theirs ON theirs.room_id = mine.room_id
       WHERE mine.user_id = ? AND mine.membership = 'join' AND theirs.user_id = ? AND theirs.membership IN ('join', 'invite') LIMIT 1`,
    )
    .bind(userId, other)
    .first();
  return !!row;
}

/** Local users joined to a room where `userId` is joined or invited (they hear of `userId`'s
 *  device changes). */
export async function joinedUsersSharingRoomWith(db: D1Database, userId: string): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT DISTINCT theirs.user_id AS user_id FROM room_memberships mine
       JOIN room_memberships theirs ON theirs.room_id = mine.room_id
       WHERE mine.user_id = ? AND mine.membership IN ('join', 'invite') AND theirs.membership = 'join'`,
    )
    .bind(userId)
    .all<{ user_id: string }>();
  return results.map((r) => r.user_id);
}

/** Members (joined or invited) of `roomId` other than `me` with whom `me` (joined) shares no
 *  other room: after `me` left it, their devices leave `me`'s device lists. */
export async function membersNoLongerShared(db: D1Database, roomId: string, me: string): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT r.user_id AS user_id FROM room_memberships r
       WHERE r.room_id = ?1 AND r.user_id != ?2 AND r.membership IN ('join', 'invite') AND NOT EXISTS (
         SELECT 1 FROM room_memberships mine JOIN room_memberships theirs ON theirs.room_id = mine.room_id
         WHERE mine.user_id = ?2 AND mine.membership = 'join' AND theirs.user_id = r.user_id AND theirs.membership IN ('join', 'invite'))`,
    )
    .bind(roomId, me)
    .all<{ user_id: string }>();
  return results.map((r) => r.user_id);
}

/** Members of `roomId` (joined or invited) other than `me`. */
export async function otherMembers(db: D1Database, roomId: string, me: string): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT user_id FROM room_memberships WHERE room_id = ? AND user_id != ? AND membership IN ('join', 'invite')")
    .bind(roomId, me)
    .all<{ user_id: string }>();
  return results.map((r) => r.user_id);
}

/** A local user's memberships not forgotten (a new sync hub adopts them). */
export async function unforgottenMemberships(db: D1Database, userId: string): Promise<{ room_id: string; membership: string; stream: number }[]> {
  const { results } = await db
    .prepare("SELECT room_id, membership, stream FROM room_memberships WHERE user_id = ? AND forgotten = 0")
    .bind(userId)
    .all<{ room_id: string; membership: string; stream: number }>();
  return results;
}
