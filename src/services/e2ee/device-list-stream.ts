// The device-list stream in D1 (spec: "Tracking the device list for a user"): every change to a
// user's devices, device keys or cross-signing keys appends a row; the row ID is the stream
// position. Plain D1 reads and writes: announcing a change (hubs, other servers) is
// device-list-changes.ts.
import type { Env } from "../../env";
import type { DB } from "../../db";
import { deviceListStream } from "../../db/schema";
import { deviceListChangesSharedWith, joinedUsersSharingRoomWith, sharesRoom } from "../../db/memberships";

/** Append a change of `userId`'s device list; returns its stream position. Announcing it (sync
 *  hubs, other servers) is markDeviceListChanged in device-list-changes.ts. */
export async function appendDeviceListChange(d: DB, userId: string): Promise<number> {
  const [row] = await d.insert(deviceListStream).values({ userId, ts: Date.now() }).returning({ id: deviceListStream.streamId });
  return row.id;
}

/** The current device-list stream position (0 when nothing ever changed). */
export async function deviceListPosition(env: Env): Promise<number> {
  const row = await env.DB.prepare("SELECT MAX(stream_id) AS p FROM device_list_stream").first<{ p: number | null }>();
  return row?.p ?? 0;
}

/** The device-list position carried by a /sync `next_batch` token (used by GET /keys/changes).
 *  Accepted forms: a bare stream position ("42"), or a token with a segment "dl<N>" between
 *  `_`, `.`, `~` or `-` separators (e.g. "s12_dl42_t3"). Returns null when there is none. */
export function deviceListPositionFromToken(token: string): number | null {
  if (/^[0-9]{1,15}$/.test(token)) return Number(token);
  const m = /(?:^|[_.~-])dl([0-9]{1,15})(?=$|[_.~-])/.exec(token);
  return m ? Number(m[1]) : null;
}

/** Users whose device lists changed in (from, to] and who share a room with `userId` (or are
 *  `userId`): what /sync `device_lists.changed` and GET /keys/changes report. "Share a room"
 *  means `userId` is joined and the other user is joined or invited. */
export async function changedDeviceLists(env: Env, userId: string, from: number, to?: number): Promise<string[]> {
  return deviceListChangesSharedWith(env.DB, userId, from, to ?? Number.MAX_SAFE_INTEGER);
}

/** Of `candidates`, those who no longer share any room with `userId` (for `device_lists.left`
 *  after membership changes). */
export async function noLongerSharingRoom(env: Env, userId: string, candidates: string[]): Promise<string[]> {
  const left: string[] = [];
  for (const other of new Set(candidates)) {
    if (other === userId) continue;
    if (!(await sharesRoom(env.DB, userId, other))) left.push(other);
  }
  return left.sort();
}

/** Local users who share a room with `userId` (they must hear of `userId`'s device changes). */
export async function usersSharingRoomWith(env: Env, userId: string): Promise<string[]> {
  const out = new Set(await joinedUsersSharingRoomWith(env.DB, userId));
  out.add(userId);
  return [...out].sort();
}
