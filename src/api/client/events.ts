// Sending and reading room events (spec: Client-Server API "Room events": send, state, redact;
// "Getting events for a room": /event, /state).
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, badJson, forbidden } from "../errors";
import { parseBody, readJsonBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { rateLimit, senderOverrides } from "../middleware/rate-limit";
import { randomString } from "../../services/crypto-util";
import type { JsonObject } from "../../core/types";
import { knownRoom, knownRoomCached, roomStub, unwrap, type RoomStub } from "../../services/rooms";
import { validateCanonicalAlias } from "../../services/aliases";
import { ignoredUserIds } from "../../services/notifier";
import { maybeScheduleDelayed } from "./delayed-events";

export const events = new Hono<AppEnv>();

async function roomFor(c: Context<AppEnv>) {
  const roomId = c.req.param("roomId")!;
  await knownRoom(c.env, roomId);
  return { roomId, stub: roomStub(c.env, c.var.config, roomId) };
}

async function objectBody(c: Context<AppEnv>): Promise<JsonObject> {
  const body = await readJsonBody(c);
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw badJson("Event content must be a JSON object");
  return body as JsonObject;
}

function requester(c: Context<AppEnv>) {
  return { userId: c.var.auth.userId, deviceId: c.var.auth.deviceId };
}

/** Timestamp massaging (spec: Application Service API): an appservice may set the event's
 *  origin_server_ts with `ts`; a value origin_server_ts cannot hold is a bad request. Others'
 *  `ts` is ignored. */
function massagedTs(c: Context<AppEnv>): { ts?: number } {
  const raw = c.req.query("ts");
  if (raw === undefined || !c.var.auth.appservice) return {};
  const ts = Number(raw);
  if (!/^[0-9]{1,16}$/.test(raw) || !Number.isSafeInteger(ts)) throw new MatrixError(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds");
  return { ts };
}

// PUT /rooms/{roomId}/send/{eventType}/{txnId}: idempotent per (device, txnId).
events.put("/rooms/:roomId/send/:eventType/:txnId", requireAuth, async (c) => {
  const content = await objectBody(c);
  const roomId = c.req.param("roomId");
  await knownRoomCached(c.env, roomId);
  const stub = roomStub(c.env, c.var.config, roomId);
  const overrides = await senderOverrides(c, c.var.auth.userId);
  if (overrides.sendLimit) await rateLimit(c, "send", c.var.auth.userId, overrides.sendLimit);
  // Shadow-banned (admin API): the event is dropped, the sender sees a plausible event ID.
  if (overrides.shadowBanned) return c.json({ event_id: `$${randomString(43)}` });
  const type = c.req.param("eventType");
  await refuseDuplicateAnnotation(stub, c.var.auth.userId, type, content);
  const delayed = await maybeScheduleDelayed(c, { roomId, type, content, txnId: c.req.param("txnId") });
  if (delayed) return delayed;
  const r = await stub.createLocalEvent({
    type,
    content,
    sender: c.var.auth.userId,
    txn: { deviceId: c.var.auth.deviceId, txnId: c.req.param("txnId") },
    ...massagedTs(c),
    ...(type === "m.room.redaction" && typeof content.redacts === "string" ? { redacts: content.redacts } : {}),
  });
  return c.json({ event_id: unwrap(r).eventId });
});

/** "Avoiding duplicate annotations": a second annotation by the same sender with the same event
 *  type and key on the same event (the first unredacted) is refused with 400
 *  M_DUPLICATE_ANNOTATION. */
async function refuseDuplicateAnnotation(stub: RoomStub, sender: string, type: string, content: JsonObject): Promise<void> {
  const rel = content["m.relates_to"];
  if (!rel || typeof rel !== "object" || Array.isArray(rel)) return;
  const r = rel as JsonObject;
  if (r.rel_type !== "m.annotation" || typeof r.event_id !== "string" || typeof r.key !== "string") return;
  if (await stub.hasAnnotation(sender, r.event_id, type, r.key)) throw new MatrixError(400, "M_DUPLICATE_ANNOTATION", "You already sent this annotation");
}

/** m.room.member through the state endpoint: only edits of one's own member event that keep the
 *  membership (a per-room displayname or avatar). Membership changes go through /join, /invite,
 *  /leave, /kick, /ban and /unban, which apply what the auth rules cannot: a restricted room's
 *  allow conditions (a join naming join_authorised_via_users_server was accepted here without
 *  them), profiles, federation. */
function requireSameMembership(sender: string, stateKey: string, content: JsonObject, current: JsonObject | undefined): void {
  if (stateKey !== sender) throw forbidden("Change other users' membership with /invite, /kick, /ban or /unban");
  const before = typeof current?.membership === "string" ? current.membership : "leave";
  if (content.membership !== before) throw forbidden("Change your membership with /join or /leave");
}

// PUT /rooms/{roomId}/state/{eventType}/{stateKey} (state key may be empty).
async function putState(c: Context<AppEnv>) {
  const content = await objectBody(c);
  const { roomId, stub } = await roomFor(c);
  const type = c.req.param("eventType")!;
  const key = c.req.param("stateKey") ?? "";
  const sender = c.var.auth.userId;
  // Guests change membership only through /join and /leave, which check m.room.guest_access.
  if (c.var.auth.isGuest && type === "m.room.member") throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot send m.room.member events");
  const delayed = await maybeScheduleDelayed(c, { roomId, type, stateKey: key, content });
  if (delayed) return delayed;
  const existing = await stub.getCurrentStateEvent(type, key);
  if (type === "m.room.member") requireSameMembership(sender, key, content, existing?.content as JsonObject | undefined);
  if (type === "m.room.canonical_alias") await validateCanonicalAlias(c.env, roomId, content, (existing?.content as JsonObject | undefined) ?? null);
  // Re-sending identical state is a no-op returning the existing event (as Synapse does).
  if (existing && existing.sender === sender && JSON.stringify(existing.content) === JSON.stringify(content)) {
    return c.json({ event_id: existing.event_id });
  }
  const r = await stub.createLocalEvent({ type, state_key: key, content, sender, ...massagedTs(c) });
  return c.json({ event_id: unwrap(r).eventId });
}
events.put("/rooms/:roomId/state/:eventType", requireAuth, putState);
events.put("/rooms/:roomId/state/:eventType/", requireAuth, putState);
events.put("/rooms/:roomId/state/:eventType/:stateKey", requireAuth, putState);

// GET /rooms/{roomId}/state/{eventType}/{stateKey}: the content (or the event with format=event).
async function getState(c: Context<AppEnv>) {
  const { stub } = await roomFor(c);
  const ev = unwrap(await stub.getStateEvent(requester(c), c.req.param("eventType")!, c.req.param("stateKey") ?? ""));
  return c.json(c.req.query("format") === "event" ? ev : ev.content);
}
events.get("/rooms/:roomId/state/:eventType", requireAuth, getState);
events.get("/rooms/:roomId/state/:eventType/", requireAuth, getState);
events.get("/rooms/:roomId/state/:eventType/:stateKey", requireAuth, getState);

events.get("/rooms/:roomId/state", requireAuth, async (c) => {
  const { stub } = await roomFor(c);
  return c.json(unwrap(await stub.getState(requester(c))));
});

events.get("/rooms/:roomId/event/:eventId", requireAuth, async (c) => {
  // Ignored users' replies stay out of the bundled thread summary (module "Ignoring Users").
  const [{ stub }, ignored] = await Promise.all([roomFor(c), ignoredUserIds(c.env, c.var.auth.userId, c.var.config)]);
  return c.json(unwrap(await stub.getEventForClient({ ...requester(c), ignored }, c.req.param("eventId"))));
});

// PUT /rooms/{roomId}/redact/{eventId}/{txnId}.
events.put("/rooms/:roomId/redact/:eventId/:txnId", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ reason: z.string().max(4096).optional() }).loose());
  const { stub } = await roomFor(c);
  const content: JsonObject = {};
  if (body.reason !== undefined) content.reason = body.reason;
  const r = await stub.createLocalEvent({
    type: "m.room.redaction",
    content,
    sender: c.var.auth.userId,
    redacts: c.req.param("eventId"),
    txn: { deviceId: c.var.auth.deviceId, txnId: c.req.param("txnId"), scope: "redact" },
  });
  return c.json({ event_id: unwrap(r).eventId });
});
