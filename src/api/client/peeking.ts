// Peeking into rooms without joining (spec: Client-Server API, module "Room Previews"):
// GET /events?room_id= — "the same as the normal /events endpoint, but can be called by users
// who have not joined the room". A non-member sees only events whose history was world_readable
// (RoomDO visibility check); other rooms answer 403 M_FORBIDDEN. Guests may call it.
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { invalidParam, unrecognized } from "../errors";
import { requireAuth } from "../middleware/auth";
import { knownRoom, roomStub, unwrap } from "../../services/rooms";
import { ignoredUserIds, withoutIgnored } from "../../services/notifier";

export const peeking = new Hono<AppEnv>();

/** Synapse's default for /events; also our upper bound on how long one request is held. */
const DEFAULT_TIMEOUT_MS = 30_000;

peeking.get("/events", requireAuth, async (c) => {
  const roomId = c.req.query("room_id");
  // Without room_id this is the deprecated whole-account event stream (replaced by /sync),
  // which Lattice does not serve.
  if (roomId === undefined) throw unrecognized("GET /events is only implemented for peeking (room_id); use /sync");
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
