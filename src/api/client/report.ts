// Reporting content (module "Reporting content"): events, rooms and users, stored in D1
// (`reports`) for the server's admins. Rate-limited per reporter.
//
// No leak about rooms the reporter cannot see: an event report answers the same 404 whether the
// room is unknown, the reporter is not joined ("servers MUST verify that the reporting user is
// currently joined"), or the event is unknown, invisible to them or redacted. Room and user
// reports answer 200 whether or not the room or user exists (the spec allows concealing it),
// and are stored either way.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, notFound } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { LIMITS, rateLimit } from "../middleware/rate-limit";
import { isValidEventId, isValidRoomId, isValidUserId } from "../../core/ids";
import { roomStub } from "../../services/rooms";

export const report = new Hono<AppEnv>();

const MAX_REASON = 4096;
const eventBody = z.object({ reason: z.string().max(MAX_REASON).optional(), score: z.number().int().min(-100).max(0).optional() }).loose();
const otherBody = z.object({ reason: z.string().max(MAX_REASON) }).loose();

async function store(c: Context<AppEnv>, r: { kind: "event" | "room" | "user"; roomId?: string; eventId?: string; targetUserId?: string; reason?: string; score?: number }) {
  await c.env.DB.prepare("INSERT INTO reports (kind, reporter, room_id, event_id, target_user_id, reason, score, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    .bind(r.kind, c.var.auth.userId, r.roomId ?? null, r.eventId ?? null, r.targetUserId ?? null, r.reason ?? null, r.score ?? null, Date.now())
    .run();
}

// POST /rooms/{roomId}/report/{eventId}
report.post("/rooms/:roomId/report/:eventId", requireAuth, async (c) => {
  const body = await parseBody(c, eventBody);
  await rateLimit(c, "report", c.var.auth.userId, LIMITS.reportPerUser);
  const roomId = c.req.param("roomId");
  const eventId = c.req.param("eventId");
  const hidden = () => notFound("Event not found or you are not joined to its room");
  if (!isValidRoomId(roomId) || !isValidEventId(eventId)) throw hidden();
  const room = await c.env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first();
  if (!room) throw hidden();
  const stub = roomStub(c.env, c.var.config, roomId);
  const userId = c.var.auth.userId;
  if ((await stub.getMembership(userId)) !== "join") throw hidden();
  const ev = await stub.getEventForClient({ userId }, eventId);
  // A redacted event has nothing left to report ("can additionally return this error").
  if (!ev.ok || (ev.value.unsigned as Record<string, unknown> | undefined)?.redacted_because) throw hidden();
  await store(c, { kind: "event", roomId, eventId, targetUserId: ev.value.sender as string, reason: body.reason, score: body.score });
  return c.json({});
});

// POST /rooms/{roomId}/report: the reporter need not be joined; 200 whether the room exists or not.
report.post("/rooms/:roomId/report", requireAuth, async (c) => {
  const body = await parseBody(c, otherBody);
  await rateLimit(c, "report", c.var.auth.userId, LIMITS.reportPerUser);
  const roomId = c.req.param("roomId");
  if (!isValidRoomId(roomId)) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid room ID");
  await store(c, { kind: "room", roomId, reason: body.reason });
  return c.json({});
});

// POST /users/{userId}/report: 200 whether the user exists or not.
report.post("/users/:userId/report", requireAuth, async (c) => {
  const body = await parseBody(c, otherBody);
  await rateLimit(c, "report", c.var.auth.userId, LIMITS.reportPerUser);
  const target = c.req.param("userId");
  if (!isValidUserId(target, { historical: true })) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid user ID");
  await store(c, { kind: "user", targetUserId: target, reason: body.reason });
  return c.json({});
});
