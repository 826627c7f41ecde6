// GET /v1/room_summary/{roomIdOrAlias} (spec 1.15, MSC3266) and GET /v1/mutual_rooms (spec
// 1.19; MSC2666's unstable path too).
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { MatrixError, notFound } from "../errors";
import { authenticate, extractAccessToken, requireAuth } from "../middleware/auth";
import { isValidRoomAlias, isValidRoomId, isValidServerName, isValidUserId } from "../../core/ids";
import type { SpaceRoomSummary } from "../../core/spaces";
import type { JsonObject } from "../../core/types";
import { resolveAnyAlias } from "../../services/aliases";
import { roomStub } from "../../services/rooms";
import { fetchRemoteHierarchy, localRoom, userMaySee } from "../../services/space-hierarchy";

export const roomSummary = new Hono<AppEnv>();
/** MSC2666's unstable prefix, /_matrix/client/unstable/uk.half-shot.msc2666. */
export const mutualRoomsUnstable = new Hono<AppEnv>();

const openRules = new Set(["public", "knock", "knock_restricted"]);

/** The room summary fields (definitions/room_summary.yaml): the hierarchy summary without
 *  children_state. */
function summaryFields(s: SpaceRoomSummary): JsonObject {
  const { children_state: _children, ...rest } = s;
  void _children;
  return rest as unknown as JsonObject;
}

roomSummary.get("/room_summary/:roomIdOrAlias", async (c) => {
  // "Servers MAY allow unauthenticated access ... if" the room is open or world_readable.
  const auth = extractAccessToken(c) ? await authenticate(c) : undefined;
  const idOrAlias = c.req.param("roomIdOrAlias");
  const via = c.req.queries("via") ?? [];
  if (via.some((s) => !isValidServerName(s))) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid server name in via");
  let roomId = idOrAlias;
  if (idOrAlias.startsWith("#")) {
    if (!isValidRoomAlias(idOrAlias)) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid room alias");
    const r = await resolveAnyAlias(c.env, c.var.config, idOrAlias).catch(() => null);
    if (!r) throw notFound("Room not found");
    roomId = r.room_id;
    via.push(...r.servers);
  } else if (!isValidRoomId(idOrAlias)) {
    throw new MatrixError(400, "M_INVALID_PARAM", "Expected a room ID or alias");
  }
  const membership = auth ? await roomStub(c.env, c.var.config, roomId).getMembership(auth.userId).catch(() => null) : null;
  const local = await localRoom(c.env, c.var.config, roomId);
  let summary: SpaceRoomSummary | undefined;
  if (local) {
    const s = local.summary;
    const visible = auth
      ? await userMaySee(c.env, c.var.config, auth.userId, roomId, { joinRule: local.joinRule, worldReadable: s.world_readable, allow: local.allow })
      : s.world_readable || openRules.has(local.joinRule);
    // Invisible and unknown look the same.
    if (!visible) throw notFound("Room not found");
    summary = s;
  } else {
    // Not in the room: ask the room's servers (the federation hierarchy answers only rooms the
    // asking server could peek or join).
    const remote = await fetchRemoteHierarchy(c.env, c.var.config, roomId, via.length ? via : [roomId.split(":").slice(1).join(":")].filter(Boolean), false);
    const s = remote?.room;
    if (!s) throw notFound("Room not found");
    const joinRule = s.join_rule ?? "invite";
    const visible =
      s.world_readable ||
      openRules.has(joinRule) ||
      (!!auth && (membership === "invite" || membership === "knock" || ((joinRule === "restricted" || joinRule === "knock_restricted") && (await userMaySee(c.env, c.var.config, auth.userId, roomId, { joinRule, worldReadable: false, allow: s.allowed_room_ids ?? [] })))));
    if (!visible) throw notFound("Room not found");
    summary = s;
  }
  const out = summaryFields(summary);
  if (auth && membership) out.membership = membership;
  return c.json(out);
});

// GET /v1/mutual_rooms?user_id=&from=: rooms where both are joined (user_directory_rooms holds
// the joined members of every room this server is in, remote users included).
const MUTUAL_BATCH = 100;
async function mutualRooms(c: import("hono").Context<AppEnv>) {
  const me = c.var.auth.userId;
  const other = c.req.query("user_id");
  if (!other) throw new MatrixError(400, "M_MISSING_PARAM", "user_id is required");
  if (!isValidUserId(other, { historical: true })) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid user_id");
  if (other === me) throw new MatrixError(400, "M_INVALID_PARAM", "user_id is your own user ID");
  const fromRaw = c.req.query("from");
  let after = "";
  if (fromRaw !== undefined) {
    try {
      after = atob(fromRaw);
    } catch {
      throw new MatrixError(400, "M_INVALID_PARAM", "Invalid from token");
    }
    if (!isValidRoomId(after)) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid from token");
  }
  const base = `FROM user_directory_rooms mine JOIN user_directory_rooms theirs ON theirs.room_id = mine.room_id AND theirs.user_id = ? WHERE mine.user_id = ?`;
  const [page, count] = await Promise.all([
    c.env.DB.prepare(`SELECT mine.room_id AS room_id ${base} AND mine.room_id > ? ORDER BY mine.room_id LIMIT ?`).bind(other, me, after, MUTUAL_BATCH + 1).all<{ room_id: string }>(),
    c.env.DB.prepare(`SELECT COUNT(*) AS n ${base}`).bind(other, me).first<{ n: number }>(),
  ]);
  const joined = page.results.slice(0, MUTUAL_BATCH).map((r) => r.room_id);
  const out: JsonObject = { joined, count: count?.n ?? joined.length };
  if (page.results.length > MUTUAL_BATCH) out.next_batch = btoa(joined[joined.length - 1]);
  return c.json(out);
}
roomSummary.get("/mutual_rooms", requireAuth, mutualRooms);
mutualRoomsUnstable.get("/user/mutual_rooms", requireAuth, mutualRooms);
