// The user directory (spec: Client-Server API "User directory"), kept in D1:
//   user_directory              who can be found, with a normalised search key;
//   user_directory_rooms        joined members of each room (local and remote), mirrored by the
//                               RoomDO after each change of its current state;
//   user_directory_public_rooms rooms whose members anyone may find.
// A search returns users who share a room with the searcher, users in public rooms, and with
// USER_DIRECTORY=all every local user. Matching is case- and accent-insensitive on the user ID
// and display name.
import type { Env } from "../env";
import type { Config } from "../config";

/** Lowercase, compatibility-decomposed, combining marks removed: "Crème" → "creme". */
export function normaliseForSearch(s: string): string {
  return s.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase();
}

function searchKey(userId: string, displayname: string | null | undefined): string {
  return normaliseForSearch(`${userId} ${displayname ?? ""}`);
}

const UPSERT = `INSERT INTO user_directory (user_id, displayname, avatar_url, search_key, is_local) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT(user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = excluded.avatar_url, search_key = excluded.search_key, is_local = excluded.is_local`;

/** A local user's row from their global profile (after registration or a profile change);
 *  removed when the account is deactivated or a guest. */
export async function refreshLocalUser(env: Env, userId: string): Promise<void> {
  const row = await env.DB.prepare("SELECT displayname, avatar_url, deactivated, is_guest FROM users WHERE user_id = ?")
    .bind(userId)
    .first<{ displayname: string | null; avatar_url: string | null; deactivated: number; is_guest: number }>();
  if (!row || row.deactivated || row.is_guest) {
    await env.DB.batch([env.DB.prepare("DELETE FROM user_directory WHERE user_id = ?").bind(userId), env.DB.prepare("DELETE FROM user_directory_rooms WHERE user_id = ?").bind(userId)]);
    return;
  }
  await env.DB.prepare(UPSERT).bind(userId, row.displayname, row.avatar_url, searchKey(userId, row.displayname), 1).run();
}

export interface DirectoryMember {
  userId: string;
  membership: string;
  displayname?: string;
  avatarUrl?: string;
}

/** After a room's current state changed: its joined members and whether it is public. Remote
 *  members' rows come from their member events; local users keep their global profile. */
export function directoryStatements(env: Env, serverName: string, roomId: string, members: DirectoryMember[], isPublic: boolean | undefined): D1PreparedStatement[] {
  const stmts: D1PreparedStatement[] = [];
  for (const m of members) {
    if (m.membership === "join") {
      stmts.push(env.DB.prepare("INSERT OR IGNORE INTO user_directory_rooms (room_id, user_id) VALUES (?, ?)").bind(roomId, m.userId));
      if (!m.userId.endsWith(`:${serverName}`)) {
        stmts.push(env.DB.prepare(UPSERT).bind(m.userId, m.displayname ?? null, m.avatarUrl ?? null, searchKey(m.userId, m.displayname), 0));
      }
    } else {
      stmts.push(env.DB.prepare("DELETE FROM user_directory_rooms WHERE room_id = ? AND user_id = ?").bind(roomId, m.userId));
    }
  }
  if (isPublic === true) stmts.push(env.DB.prepare("INSERT OR IGNORE INTO user_directory_public_rooms (room_id) VALUES (?)").bind(roomId));
  if (isPublic === false) stmts.push(env.DB.prepare("DELETE FROM user_directory_public_rooms WHERE room_id = ?").bind(roomId));
  return stmts;
}

export interface DirectoryResult {
  results: { user_id: string; display_name?: string; avatar_url?: string }[];
  limited: boolean;
}

/** LIKE pattern for a substring, with LIKE's wildcards escaped. */
function likeSubstring(s: string): string {
  return `%${s.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
}

/** With USER_DIRECTORY=all, rows found only because they are local users are checked with
 *  `notListedAlone` (appservice users: src/api/client/user-directory.ts); this many extra rows
 *  are read so that dropping some still fills the page. */
const ALL_SCOPE_SLACK = 20;

export async function searchUserDirectory(env: Env, config: Config, searcher: string, term: string, limit: number, notListedAlone?: (userId: string) => boolean): Promise<DirectoryResult> {
  const words = normaliseForSearch(term).split(/\s+/).filter(Boolean).slice(0, 8);
  if (words.length === 0) return { results: [], limited: false };
  const match = words.map(() => "d.search_key LIKE ? ESCAPE '\\'").join(" AND ");
  // Correlated EXISTS: checked only for users whose key matched, through the user_id index
  // (materialising every public room's members first cost ~10,000 rows per search).
  const scope = [
    "EXISTS (SELECT 1 FROM user_directory_rooms theirs JOIN user_directory_rooms mine ON mine.room_id = theirs.room_id AND mine.user_id = ? WHERE theirs.user_id = d.user_id)",
    "EXISTS (SELECT 1 FROM user_directory_rooms r JOIN user_directory_public_rooms p ON p.room_id = r.room_id WHERE r.user_id = d.user_id)",
  ];
  const all = config.userDirectory === "all";
  const viaRoom = `(${scope.join(" OR ")})`;
  if (all) scope.push("d.is_local = 1");
  // Display names that start with the term first, then user IDs that do, then the rest.
  const first = words[0];
  const slack = all && notListedAlone ? ALL_SCOPE_SLACK : 0;
  const viaRoomColumn = slack ? `, ${viaRoom} AS via_room` : "";
  const viaRoomBinds = slack ? [searcher] : [];
  const { results: rows } = await env.DB.prepare(
    `SELECT d.user_id, d.displayname, d.avatar_url${viaRoomColumn} FROM user_directory d WHERE ${match} AND (${scope.join(" OR ")})
     ORDER BY (lower(coalesce(d.displayname, '')) LIKE ? ESCAPE '\\') DESC, (substr(d.user_id, 2) LIKE ? ESCAPE '\\') DESC, d.user_id LIMIT ?`,
  )
    .bind(...viaRoomBinds, ...words.map(likeSubstring), searcher, `${first.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`, `${first.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`, limit + 1 + slack)
    .all<{ user_id: string; displayname: string | null; avatar_url: string | null; via_room?: number }>();
  const results = slack ? rows.filter((r) => r.via_room || !notListedAlone!(r.user_id)) : rows;
  const out: DirectoryResult["results"] = results.slice(0, limit).map((r) => {
    const o: DirectoryResult["results"][number] = { user_id: r.user_id };
    if (r.displayname) o.display_name = r.displayname;
    if (r.avatar_url) o.avatar_url = r.avatar_url;
    return o;
  });
  return { results: out, limited: results.length > limit };
}
