// Tokens that name a point in one room's history, as a client may hold them (spec: Client-Server
// API GET /rooms/{roomId}/messages `from`/`to`: "a `prev_batch` or `next_batch` token returned by
// the `/sync` endpoint, or ... an `end` token returned by a previous request to this endpoint";
// GET /rooms/{roomId}/members `at`, which clients fill with /sync's `next_batch` too):
//   - `t<n>`: the RoomDO's own pagination token (prev_batch, /messages start/end, /context
//     start/end): the position after every accepted event with stream <= n;
//   - `s<pos>_<epoch>`: a /sync `next_batch` of this user: a position of the user's hub, which
//     knows the room stream position the client had seen there (UserDO.roomPosition).
// roomPositionFromToken turns either into a room stream position; every endpoint that takes
// such a token goes through it.
import type { Env } from "../env";
import type { Config } from "../config";
import { MatrixError, invalidParam } from "../api/errors";
import { userStub } from "./notifier";

const SYNC_TOKEN = /^s\d{1,15}_[0-9a-z]+$/;
// The room token grammar RoomDO's parseToken accepts (a bare number is an older form).
const ROOM_TOKEN = /^t?(-?\d{1,15})$/;

/**
 * The room stream position a token names, or undefined when no token was given (the endpoint's
 * default: now for /members and /messages dir=b, the start for dir=f). `prefer` says which end
 * to take when a sync token pins the room only within a range (a token from before the hub's
 * compacted log, or from before the room first reached the user): the end that gives the
 * caller more events, never fewer — "later" for a `from` paging back, an `at`, or a `to` paging
 * forward; "earlier" for a `from` paging forward or a `to` paging back.
 */
export async function roomPositionFromToken(
  env: Env,
  config: Pick<Config, "jurisdiction" | "locationHint">,
  userId: string,
  roomId: string,
  token: string | undefined,
  prefer: "earlier" | "later",
): Promise<number | undefined> {
  if (token === undefined || token === "") return undefined;
  const t = ROOM_TOKEN.exec(token);
  if (t) return Number(t[1]);
  if (!SYNC_TOKEN.test(token)) throw invalidParam("Invalid pagination token");
  const r = await userStub(env, userId, config).roomPosition(userId, roomId, token);
  if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
  const n = prefer === "later" ? r.value.high : r.value.low;
  return n ?? undefined;
}

/** The room token form of a position (what the RoomDO's reads take). */
export function roomToken(n: number | undefined): string | undefined {
  return n === undefined ? undefined : `t${n}`;
}
