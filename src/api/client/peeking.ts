// Peeking into rooms without joining (spec: Client-Server API, module "Room Previews"): "A
// client wishing to view a room without joining it should call GET /rooms/:room_id/initialSync,
// followed by GET /events" — the latter "the same as the normal /events endpoint, but can be
// called by users who have not joined the room". A non-member sees only events whose history was
// world_readable (RoomDO visibility check); other rooms answer 403 M_FORBIDDEN. Guests may call
// both.
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { invalidParam } from "../errors";
import { queryLimit } from "../validate";
import { accountEvents } from "./old-sync";
import type { JsonObject } from "../../core/types";
import { getRoomVisibility } from "../../services/room-directory";
import { requireAuth } from "../middleware/auth";
import { knownRoom, roomStub, unwrap } from "../../services/rooms";
import { ignoredUserIds, withoutIgnored } from "../../services/notifier";

export const peeking = new Hono<AppEnv>();

/** Synapse's default for /events; also our upper bound on how long one request is held. */
const DEFAULT_TIMEOUT_MS = 30_000;

peeking.get("/events", requireAuth, async (c) => {
  const roomId = c.req.query("room_id");
  // Without room_id this is the deprecated whole-account event stream (replaced by /sync).
  if (roomId === undefined) return c.json(await accountEvents(c));
  const rawTimeout = c.req.query("timeout");
  const timeout = rawTimeout === undefined || rawTimeout === "" ? DEFAULT_TIMEOUT_MS : Number(rawTimeout);
  if (!Number.isInteger(timeout) || timeout < 0) throw invalidParam("timeout must be a non-negative integer");
  await knownRoom(c.env, roomId);
  const { userId, deviceId } = c.var.auth;
  const [res, ignored] = await Promise.all([
    roomStub(c.env, c.var.config, roomId).peekEvents({ userId, deviceId }, { from: c.req.query("from") || undefined, timeoutMs: Math.min(timeout, DEFAULT_TIMEOUT_MS) }),
    ignoredUserIds(c.env, userId, c.var.config),
  ]);
  const value = unwrap(res);
  // Module "Ignoring Users", as for /messages.
  value.chunk = withoutIgnored(value.chunk, ignored);
  return c.json(value);
});

const MEMBERSHIPS = new Set(["invite", "join", "leave", "ban"]);

/** GET /rooms/{roomId}/initialSync: the room's state and latest messages as the requester may
 *  see them; `messages.end` is where GET /events?room_id= continues from. `limit` is not in the
 *  spec, but clients send it (matrix-js-sdk's peekInRoom). account_data is left out. */
peeking.get("/rooms/:roomId/initialSync", requireAuth, async (c) => {
  const roomId = c.req.param("roomId");
  const limit = queryLimit(c.req.query("limit"), { dflt: 20 });
  await knownRoom(c.env, roomId);
  const stub = roomStub(c.env, c.var.config, roomId);
  const { userId, deviceId } = c.var.auth;
  const req = { userId, deviceId };
  const state = unwrap(await stub.getState(req));
  const [page, membership, visibility, ignored] = await Promise.all([
    stub.getMessages(req, { dir: "b", limit: Math.min(limit, 100) }),
    stub.getMembership(userId),
    getRoomVisibility(c.env, roomId),
    ignoredUserIds(c.env, userId, c.var.config),
  ]);
  const back = unwrap(page);
  const messages: JsonObject = { chunk: withoutIgnored(back.chunk, ignored).reverse(), end: back.start };
  // Paging back from the oldest event returned; omitted when there is nothing earlier.
  if (back.end !== undefined) messages.start = back.end;
  const out: JsonObject = { room_id: roomId, messages, state, visibility };
  if (membership && MEMBERSHIPS.has(membership)) out.membership = membership;
  return c.json(out);
});
