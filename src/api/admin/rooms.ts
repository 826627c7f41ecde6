// Synapse-compatible room administration (/_synapse/admin/v1|v2/rooms/..., Synapse's
// docs/admin_api/rooms.md): list, details, members, state, messages, block, delete (v1 at once,
// v2 in the background with a status).
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam, notFound } from "../errors";
import { parseBody, parseValue } from "../validate";
import { boolQuery, dirQuery, paging, requireAdmin } from "./common";
import { isValidRoomId, isValidUserId } from "../../core/ids";
import { roomStub, unwrap } from "../../services/rooms";
import { randomString } from "../../services/crypto-util";
import { roomSummary, shutdownRoom, type DeleteRoomOptions, type RoomSummaryRow } from "../../services/admin-rooms";

export const adminRooms = new Hono<AppEnv>();

interface RoomRow {
  room_id: string;
  room_version: string;
  creator: string;
}

function roomParam(c: Context<AppEnv>): string {
  const roomId = c.req.param("roomId") ?? "";
  if (!isValidRoomId(roomId)) throw invalidParam("Invalid room ID");
  return roomId;
}

async function knownRoomRow(c: Context<AppEnv>): Promise<RoomRow> {
  const roomId = roomParam(c);
  const row = await c.env.DB.prepare("SELECT room_id, room_version, creator FROM rooms WHERE room_id = ?").bind(roomId).first<RoomRow>();
  if (!row) throw notFound("Room not found");
  return row;
}

const ROOM_ORDER = [
  "name",
  "canonical_alias",
  "joined_members",
  "joined_local_members",
  "version",
  "creator",
  "encryption",
  "federatable",
  "public",
  "join_rules",
  "guest_access",
  "history_visibility",
  "state_events",
] as const;

/** Rooms whose summaries the list computes per request (one RoomDO read each). Past this, the
 *  list answers from the first rooms only and says so in the logs. */
const MAX_LISTED_ROOMS = 5000;

// GET /_synapse/admin/v1/rooms: search_term (name, canonical alias or room ID), order_by, dir,
// from/limit; total_rooms, offset, next_batch/prev_batch.
adminRooms.get("/v1/rooms", async (c) => {
  await requireAdmin(c);
  const { from, limit } = paging(c, 100, 1000);
  // `alphabetical` and `size` are Synapse's deprecated names for `name` and `joined_members`.
  const asked = c.req.query("order_by") ?? "name";
  const orderBy = asked === "alphabetical" ? "name" : asked === "size" ? "joined_members" : asked;
  if (!(ROOM_ORDER as readonly string[]).includes(orderBy)) throw invalidParam(`Unknown value for order_by: ${asked}`);
  const publicRooms = c.req.query("public_rooms") === undefined ? undefined : boolQuery(c, "public_rooms", false);
  const emptyRooms = c.req.query("empty_rooms") === undefined ? undefined : boolQuery(c, "empty_rooms", false);
  const dir = dirQuery(c);
  const term = c.req.query("search_term")?.toLowerCase();
  const { results } = await c.env.DB.prepare("SELECT room_id, room_version, creator FROM rooms ORDER BY created_ts LIMIT ?").bind(MAX_LISTED_ROOMS).all<RoomRow>();
  const all: RoomSummaryRow[] = [];
  for (let i = 0; i < results.length; i += 50) {
    all.push(...(await Promise.all(results.slice(i, i + 50).map((r) => roomSummary(c.env, c.var.config, r)))));
  }
  const matches = all.filter(
    (r) =>
      (!term || r.room_id.toLowerCase().includes(term) || r.name?.toLowerCase().includes(term) || r.canonical_alias?.toLowerCase().includes(term)) &&
      (publicRooms === undefined || r.public === publicRooms) &&
      (emptyRooms === undefined || (r.joined_members === 0) === emptyRooms),
  );
  const key = orderBy as keyof RoomSummaryRow;
  const sign = dir === "ASC" ? 1 : -1;
  // Largest first by default for member counts, state size and version (Synapse's ordering).
  const numeric = key === "joined_members" || key === "joined_local_members" || key === "state_events" || key === "version";
  const value = (r: RoomSummaryRow) => (key === "version" && /^\d+$/.test(r.version) ? Number(r.version) : (r[key] ?? ""));
  matches.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const cmp = x < y ? -1 : x > y ? 1 : a.room_id < b.room_id ? -1 : 1;
    return (numeric ? -cmp : cmp) * sign;
  });
  const page = matches.slice(from, from + limit);
  const body: Record<string, unknown> = { rooms: page, offset: from, total_rooms: matches.length };
  if (page.length > 0 && from + page.length < matches.length) body.next_batch = from + page.length;
  if (from > 0) body.prev_batch = Math.max(0, from - limit);
  return c.json(body);
});

adminRooms.get("/v1/rooms/:roomId", async (c) => {
  await requireAdmin(c);
  const row = await knownRoomRow(c);
  const s = await roomSummary(c.env, c.var.config, row);
  const devices = await c.env.DB.prepare(
    "SELECT COUNT(*) AS n FROM devices d JOIN room_memberships m ON m.user_id = d.user_id WHERE m.room_id = ? AND m.membership = 'join'",
  )
    .bind(row.room_id)
    .first<{ n: number }>();
  const blocked = await c.env.DB.prepare("SELECT 1 FROM blocked_rooms WHERE room_id = ?").bind(row.room_id).first();
  return c.json({ ...s, joined_local_devices: devices?.n ?? 0, forgotten: false, blocked: !!blocked });
});

adminRooms.get("/v1/rooms/:roomId/members", async (c) => {
  await requireAdmin(c);
  const row = await knownRoomRow(c);
  const members = await roomStub(c.env, c.var.config, row.room_id).getJoinedUserIds();
  members.sort();
  return c.json({ members, total: members.length });
});

adminRooms.get("/v1/rooms/:roomId/state", async (c) => {
  await requireAdmin(c);
  const row = await knownRoomRow(c);
  const state = await roomStub(c.env, c.var.config, row.room_id).getCurrentState();
  const type = c.req.query("type");
  return c.json({ state: type ? state.filter((e) => e.type === type) : state });
});

// GET /_synapse/admin/v1/rooms/{roomId}/messages: paginated as /messages, seen by the room's
// creator when still joined, else by a joined local member (history visibility applies to them;
// Synapse shows admins everything — a room with no local member answers 404 here).
adminRooms.get("/v1/rooms/:roomId/messages", async (c) => {
  await requireAdmin(c);
  const row = await knownRoomRow(c);
  const stub = roomStub(c.env, c.var.config, row.room_id);
  const dirParam = c.req.query("dir") ?? "f";
  if (dirParam !== "f" && dirParam !== "b") throw invalidParam("dir must be f or b");
  const limit = Math.min(parseValue(c.req.query("limit") ?? "10", z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER)), 1000);
  const joined = (await stub.getJoinedUserIds()).filter((u) => u.endsWith(`:${c.var.config.serverName}`));
  const viewer = joined.includes(row.creator) ? row.creator : joined.sort()[0];
  if (!viewer) throw notFound("No local member can read this room");
  const r = unwrap(await stub.getMessages({ userId: viewer }, { dir: dirParam, limit, from: c.req.query("from"), to: c.req.query("to") }));
  return c.json(r);
});

adminRooms.get("/v1/rooms/:roomId/block", async (c) => {
  await requireAdmin(c);
  const roomId = roomParam(c);
  const row = await c.env.DB.prepare("SELECT user_id FROM blocked_rooms WHERE room_id = ?").bind(roomId).first<{ user_id: string }>();
  return c.json(row ? { block: true, user_id: row.user_id } : { block: false });
});

adminRooms.put("/v1/rooms/:roomId/block", async (c) => {
  const adminId = await requireAdmin(c);
  const roomId = roomParam(c);
  const body = await parseBody(c, z.object({ block: z.boolean() }));
  if (body.block) {
    await c.env.DB.prepare("INSERT INTO blocked_rooms (room_id, user_id, created_ts) VALUES (?, ?, ?) ON CONFLICT DO NOTHING").bind(roomId, adminId, Date.now()).run();
  } else {
    await c.env.DB.prepare("DELETE FROM blocked_rooms WHERE room_id = ?").bind(roomId).run();
  }
  return c.json({ block: body.block });
});

const deleteSchema = z.object({
  new_room_user_id: z.string().max(255).optional(),
  room_name: z.string().max(255).optional(),
  message: z.string().max(4096).optional(),
  block: z.boolean().optional(),
  purge: z.boolean().optional(),
  force_purge: z.boolean().optional(),
});

async function deleteOptions(c: Context<AppEnv>, requester: string): Promise<DeleteRoomOptions> {
  const body = await parseBody(c, deleteSchema);
  if (body.new_room_user_id !== undefined) {
    const u = body.new_room_user_id;
    if (!isValidUserId(u) || !u.endsWith(`:${c.var.config.serverName}`)) throw new MatrixError(400, "M_INVALID_PARAM", "User must be our own: " + u);
    const exists = await c.env.DB.prepare("SELECT 1 FROM users WHERE user_id = ? AND deactivated = 0").bind(u).first();
    if (!exists) throw new MatrixError(400, "M_INVALID_PARAM", "new_room_user_id does not exist");
  }
  return { requester, newRoomUserId: body.new_room_user_id, roomName: body.room_name, message: body.message, block: body.block === true, purge: body.purge !== false };
}

// DELETE /_synapse/admin/v1/rooms/{roomId}: the same shutdown, answered when done.
adminRooms.delete("/v1/rooms/:roomId", async (c) => {
  const adminId = await requireAdmin(c);
  const roomId = roomParam(c);
  const opts = await deleteOptions(c, adminId);
  return c.json(await shutdownRoom(c.env, c.var.config, roomId, opts));
});

// DELETE /_synapse/admin/v2/rooms/{roomId}: runs in the background; {delete_id}.
adminRooms.delete("/v2/rooms/:roomId", async (c) => {
  const adminId = await requireAdmin(c);
  const roomId = roomParam(c);
  const opts = await deleteOptions(c, adminId);
  const running = await c.env.DB.prepare("SELECT 1 FROM room_deletions WHERE room_id = ? AND status IN ('shutting_down', 'purging')").bind(roomId).first();
  if (running) throw new MatrixError(400, "M_UNKNOWN", `History purge already in progress for ${roomId}`);
  const deleteId = randomString(16);
  await c.env.DB.prepare("INSERT INTO room_deletions (delete_id, room_id, status, created_ts) VALUES (?, ?, 'shutting_down', ?)").bind(deleteId, roomId, Date.now()).run();
  const run = async () => {
    try {
      const result = await shutdownRoom(c.env, c.var.config, roomId, opts);
      await c.env.DB.prepare("UPDATE room_deletions SET status = 'complete', result = ? WHERE delete_id = ?").bind(JSON.stringify(result), deleteId).run();
    } catch (e) {
      await c.env.DB.prepare("UPDATE room_deletions SET status = 'failed', error = ? WHERE delete_id = ?").bind(String(e), deleteId).run();
    }
  };
  c.executionCtx.waitUntil(run());
  return c.json({ delete_id: deleteId });
});

interface DeletionRow {
  delete_id: string;
  room_id: string;
  status: string;
  error: string | null;
  result: string;
}

function deletionStatus(r: DeletionRow) {
  const res = JSON.parse(r.result) as Partial<{ kicked_users: string[]; failed_to_kick_users: string[]; local_aliases: string[]; new_room_id: string | null }>;
  return {
    delete_id: r.delete_id,
    status: r.status,
    ...(r.error ? { error: r.error } : {}),
    shutdown_room: {
      kicked_users: res.kicked_users ?? [],
      failed_to_kick_users: res.failed_to_kick_users ?? [],
      local_aliases: res.local_aliases ?? [],
      new_room_id: res.new_room_id ?? null,
    },
  };
}

adminRooms.get("/v2/rooms/:roomId/delete_status", async (c) => {
  await requireAdmin(c);
  const roomId = roomParam(c);
  const { results } = await c.env.DB.prepare("SELECT * FROM room_deletions WHERE room_id = ? ORDER BY created_ts").bind(roomId).all<DeletionRow>();
  if (!results.length) throw notFound("No delete task for room_id");
  return c.json({ results: results.map(deletionStatus) });
});

adminRooms.get("/v2/rooms/delete_status/:deleteId", async (c) => {
  await requireAdmin(c);
  const r = await c.env.DB.prepare("SELECT * FROM room_deletions WHERE delete_id = ?").bind(c.req.param("deleteId")).first<DeletionRow>();
  if (!r) throw notFound("delete id not found");
  const { delete_id: _, ...rest } = deletionStatus(r);
  return c.json(rest);
});
