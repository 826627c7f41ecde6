// Federated rooms, serving side (spec: Server-Server API "Joining Rooms", "Knocking upon a room",
// "Inviting to a room", "Leaving Rooms (Rejecting Invites)", "Retrieving events", "Backfilling
// and retrieving missing events"):
//   GET  /v1/make_join/{roomId}/{userId}?ver=     PUT /v2/send_join/{roomId}/{eventId}?omit_members=
//   GET  /v1/make_leave/{roomId}/{userId}         PUT /v2/send_leave/{roomId}/{eventId}
//   GET  /v1/make_knock/{roomId}/{userId}?ver=    PUT /v1/send_knock/{roomId}/{eventId}
//   PUT  /v2/invite/{roomId}/{eventId}            (we are the invitee's server and co-sign)
//   GET  /v1/event/{eventId}   GET /v1/state/{roomId}?event_id=   GET /v1/state_ids/{roomId}?event_id=
//   GET  /v1/event_auth/{roomId}/{eventId}        GET /v1/backfill/{roomId}?v=&limit=
//   POST /v1/get_missing_events/{roomId}
// Every endpoint that names a room checks the room's server ACL first; the RoomDO applies
// history visibility for the requesting server (c.var.origin). Third-party invite exchange
// (PUT /v1/exchange_third_party_invite) is not implemented: M_UNRECOGNIZED.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, badJson, forbidden, notFound, unrecognized } from "../errors";
import { parseBody, parseValue } from "../validate";
import type { JsonObject, PDU } from "../../core/types";
import { getRoomVersion } from "../../core/room-versions";
import { computeEventId } from "../../core/event-hashes";
import { redactEvent } from "../../core/redaction";
import { signJson } from "../../core/signing";
import { isValidRoomId, isValidUserId, parseUserId } from "../../core/ids";
import { requireServerAllowed } from "../../services/federation/inbound";
import { sendPresenceOnJoin } from "../../services/federation/edus";
import { knownRoom, roomStub, unwrap, isLocalUser } from "../../services/rooms";
import { getServerSigningKey } from "../../services/server-key";
import { recentRoomsWithLocalJoins } from "../../db/memberships";

export const federationRooms = new Hono<AppEnv>();

const MAX_BACKFILL = 100;
const MAX_MISSING = 20;

/** The room, after its ACL let the origin in; 404 for rooms we do not hold. */
async function roomFor(c: Context<AppEnv>, roomId: string) {
  if (!isValidRoomId(roomId)) throw notFound("Unknown room");
  const row = await c.env.DB.prepare("SELECT room_version FROM rooms WHERE room_id = ?").bind(roomId).first<{ room_version: string }>();
  if (!row) throw notFound("Unknown room");
  await requireServerAllowed(c.env, c.var.config, roomId, c.var.origin);
  return { stub: roomStub(c.env, c.var.config, roomId), roomVersion: row.room_version };
}

/** The requesting server may only act for its own users. */
function requireOwnUser(c: Context<AppEnv>, userId: string): void {
  const parsed = parseUserId(userId);
  if (!parsed || !isValidUserId(userId, { historical: true })) throw badJson("Invalid user ID");
  if (parsed.serverName !== c.var.origin) throw forbidden("The user is not on the requesting server");
}

/** make_join/make_knock `ver`: the versions the joining server supports (default ["1"]). */
function requireVersion(c: Context<AppEnv>, roomVersion: string): void {
  const vers = c.req.queries("ver") ?? ["1"];
  if (!vers.includes(roomVersion)) {
    throw new MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", `Your server does not support room version ${roomVersion}`, { room_version: roomVersion });
  }
}

/** Restricted rooms (room versions 8+, spec "Restricted rooms"): when the joining user is not
 *  invited, check the allow conditions with the rooms we know and pick a local user who may
 *  invite to authorise the join. */
async function authoriseRestrictedJoin(c: Context<AppEnv>, stub: ReturnType<typeof roomStub>, roomVersion: string, userId: string): Promise<string | undefined> {
  const rv = getRoomVersion(roomVersion);
  if (!rv?.restrictedJoins) return undefined;
  const rules = (await stub.getCurrentStateEvent("m.room.join_rules", ""))?.content as JsonObject | undefined;
  if (rules?.join_rule !== "restricted" && rules?.join_rule !== "knock_restricted") return undefined;
  const current = await stub.getMembership(userId);
  if (current === "join" || current === "invite") return undefined;
  const allow = Array.isArray(rules.allow) ? (rules.allow as JsonObject[]) : [];
  let allowed = false;
  for (const a of allow) {
    if (a?.type !== "m.room_membership" || typeof a.room_id !== "string" || !isValidRoomId(a.room_id)) continue;
    if (!(await knownRoom(c.env, a.room_id).catch(() => undefined))) continue;
    if ((await roomStub(c.env, c.var.config, a.room_id).getMembership(userId)) === "join") {
      allowed = true;
      break;
    }
  }
  if (!allowed) throw new MatrixError(403, "M_FORBIDDEN", "The user does not meet the room's join conditions");
  for (const m of await stub.getJoinedUserIds()) {
    if (!isLocalUser(c.var.config, m)) continue;
    const p = await stub.getPowerInfo(m);
    if (p.level >= p.invite) return m;
  }
  throw new MatrixError(400, "M_UNABLE_TO_GRANT_JOIN", "No user on this server can authorise the join");
}

/** send_join of a join that names one of our users in join_authorised_via_users_server: we
 *  co-sign it, and the auth rules trust that signature for the allow conditions, so they are
 *  checked again here (spec "Restricted rooms": the resident server checks them on /make_join
 *  and /send_join). A server can skip make_join, or send its template after its user left the
 *  allowing room. */
async function recheckRestrictedJoin(c: Context<AppEnv>, stub: ReturnType<typeof roomStub>, roomVersion: string, pdu: PDU): Promise<void> {
  const content = pdu?.content as JsonObject | undefined;
  const via = content?.join_authorised_via_users_server;
  if (content?.membership !== "join" || typeof via !== "string" || !isLocalUser(c.var.config, via)) return;
  // Not the origin's own user: the RoomDO refuses it (fedSendMembership).
  if (typeof pdu.sender !== "string" || parseUserId(pdu.sender)?.serverName !== c.var.origin) return;
  await authoriseRestrictedJoin(c, stub, roomVersion, pdu.sender);
}

// -- make_join / make_leave / make_knock --------------------------------------------------------

federationRooms.get("/v1/make_join/:roomId/:userId", async (c) => {
  const { roomId, userId } = c.req.param();
  requireOwnUser(c, userId);
  const { stub, roomVersion } = await roomFor(c, roomId);
  requireVersion(c, roomVersion);
  const authorisedVia = await authoriseRestrictedJoin(c, stub, roomVersion, userId);
  return c.json(unwrap(await stub.fedTemplate({ userId, membership: "join", authorisedVia })));
});

federationRooms.get("/v1/make_leave/:roomId/:userId", async (c) => {
  const { roomId, userId } = c.req.param();
  requireOwnUser(c, userId);
  const { stub } = await roomFor(c, roomId);
  return c.json(unwrap(await stub.fedTemplate({ userId, membership: "leave" })));
});

federationRooms.get("/v1/make_knock/:roomId/:userId", async (c) => {
  const { roomId, userId } = c.req.param();
  requireOwnUser(c, userId);
  const { stub, roomVersion } = await roomFor(c, roomId);
  requireVersion(c, roomVersion);
  if (!getRoomVersion(roomVersion)?.knocking) throw new MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "This room version does not allow knocking", { room_version: roomVersion });
  return c.json(unwrap(await stub.fedTemplate({ userId, membership: "knock" })));
});

// -- send_join / send_leave / send_knock --------------------------------------------------------

const pduBody = z.record(z.string(), z.unknown());

federationRooms.put("/v2/send_join/:roomId/:eventId", async (c) => {
  const { roomId, eventId } = c.req.param();
  const pdu = (await parseBody(c, pduBody)) as unknown as PDU;
  const { stub, roomVersion } = await roomFor(c, roomId);
  await recheckRestrictedJoin(c, stub, roomVersion, pdu);
  const omitMembers = c.req.query("omit_members") === "true";
  const r = unwrap(await stub.fedSendMembership({ eventId, pdu, origin: c.var.origin, membership: "join", omitMembers }));
  // The state and auth chain come as JSON text (the stored PDUs, not parsed here and written
  // again: tens of thousands of events in a large room) and go into the answer as they are.
  const rest: JsonObject = { origin: c.var.config.serverName, servers_in_room: r.servers_in_room!, members_omitted: r.members_omitted ?? false };
  if (r.event) rest.event = r.event as unknown as JsonObject;
  // The joining server learns our members' presence now, not at their next change.
  c.executionCtx.waitUntil(sendPresenceOnJoin(c.env, c.var.config, roomId, { server: c.var.origin }).catch((e) => console.error("presence on join", e)));
  return c.body(`{"state":${r.stateJson!},"auth_chain":${r.authChainJson!},${JSON.stringify(rest).slice(1)}`, 200, { "content-type": "application/json" });
});

federationRooms.put("/v2/send_leave/:roomId/:eventId", async (c) => {
  const { roomId, eventId } = c.req.param();
  const pdu = (await parseBody(c, pduBody)) as unknown as PDU;
  const { stub } = await roomFor(c, roomId);
  unwrap(await stub.fedSendMembership({ eventId, pdu, origin: c.var.origin, membership: "leave" }));
  return c.json({});
});

federationRooms.put("/v1/send_knock/:roomId/:eventId", async (c) => {
  const { roomId, eventId } = c.req.param();
  const pdu = (await parseBody(c, pduBody)) as unknown as PDU;
  const { stub } = await roomFor(c, roomId);
  const r = unwrap(await stub.fedSendMembership({ eventId, pdu, origin: c.var.origin, membership: "knock" }));
  return c.json({ knock_room_state: r.stripped ?? [] });
});

// -- invites (we are the invitee's server) ------------------------------------------------------

const inviteBody = z.object({
  room_version: z.string(),
  event: z.record(z.string(), z.unknown()),
  invite_room_state: z.array(z.record(z.string(), z.unknown())).max(50).optional(),
});

federationRooms.put("/v2/invite/:roomId/:eventId", async (c) => {
  const { roomId, eventId } = c.req.param();
  const body = await parseBody(c, inviteBody);
  const config = c.var.config;
  const rv = getRoomVersion(body.room_version);
  if (!rv) throw new MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", `Room version ${body.room_version} is not supported`, { room_version: body.room_version });
  if (!isValidRoomId(roomId)) throw badJson("Invalid room ID");
  const pdu = body.event as unknown as PDU;
  if (pdu.type !== "m.room.member" || pdu.content?.membership !== "invite" || typeof pdu.state_key !== "string") throw badJson("Not an invite");
  if (pdu.room_id !== roomId) throw badJson("Event is for another room");
  if (parseUserId(pdu.sender)?.serverName !== c.var.origin) throw forbidden("The inviter is not on the requesting server");
  if (!isLocalUser(config, pdu.state_key)) throw badJson("The invitee is not on this server");
  const user = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(pdu.state_key).first<{ deactivated: number }>();
  if (!user || user.deactivated) throw notFound("Unknown user");
  let computed: string;
  try {
    computed = await computeEventId(pdu, rv);
  } catch {
    throw badJson("Malformed event");
  }
  if (computed !== eventId) throw badJson("Event ID does not match the event");
  await requireServerAllowed(c.env, config, roomId, c.var.origin);
  // "The invited user's server MUST sign the event" (its signature joins the inviter's).
  const key = await getServerSigningKey(c.env, config);
  const signed = await signJson(redactEvent(pdu, rv), config.serverName, key, { strict: rv.strictCanonicalJson });
  const event = { ...pdu, signatures: { ...pdu.signatures, [config.serverName]: signed.signatures[config.serverName] } } as PDU;
  const stub = roomStub(c.env, config, roomId);
  unwrap(await stub.storeRemoteMembership({ serverName: config.serverName, roomId, roomVersion: rv.id, pdu: event, stripped: (body.invite_room_state ?? []) as JsonObject[] }));
  return c.json({ event });
});

federationRooms.put("/v1/invite/:roomId/:eventId", () => {
  throw unrecognized("Use /v2/invite");
});
federationRooms.put("/v1/exchange_third_party_invite/:roomId", () => {
  throw unrecognized("Third-party invites are not supported");
});

// -- retrieving events --------------------------------------------------------------------------

function txnEnvelope(c: Context<AppEnv>, pdus: PDU[]): JsonObject {
  return { origin: c.var.config.serverName, origin_server_ts: Date.now(), pdus: pdus as unknown as JsonObject[] };
}

/** Rooms searched for an event when the request names none: only rooms of the registry with a
 *  local user joined (a room we left is not one we serve), the latest local membership change
 *  first, EVENT_SCAN_BATCH at a time, stopping at the first that holds it. One request wakes at most
 *  MAX_EVENT_ROOMS Durable Objects (it was 200, one after another, over every room we ever
 *  knew). Rooms beyond that are found with our room_id hint (Lattice sends it) or through the
 *  room-scoped reads (state_ids, get_missing_events). */
const MAX_EVENT_ROOMS = 50;
const EVENT_SCAN_BATCH = 10;

federationRooms.get("/v1/event/:eventId", async (c) => {
  const eventId = c.req.param("eventId");
  // The event ID does not name its room (v3+) and no index maps events to rooms. With the
  // (non-spec) room_id hint the room must be in the registry (roomFor); the RoomDO then
  // requires the origin to be in the room.
  const roomId = c.req.query("room_id");
  let candidates: string[];
  if (roomId !== undefined) {
    await roomFor(c, roomId);
    candidates = [roomId];
  } else {
    candidates = await recentRoomsWithLocalJoins(c.env.DB, MAX_EVENT_ROOMS);
  }
  for (let i = 0; i < candidates.length; i += EVENT_SCAN_BATCH) {
    const batch = candidates.slice(i, i + EVENT_SCAN_BATCH);
    const held = await Promise.all(batch.map(async (rid) => ((await roomStub(c.env, c.var.config, rid).getPdu(eventId)) ? rid : null)));
    const rid = held.find((r): r is string => r !== null);
    if (!rid) continue;
    await requireServerAllowed(c.env, c.var.config, rid, c.var.origin);
    return c.json(txnEnvelope(c, [unwrap(await roomStub(c.env, c.var.config, rid).fedEvent(c.var.origin, eventId))]));
  }
  throw notFound("Event not found");
});

const eventIdQuery = z.object({ event_id: z.string().min(1) });

federationRooms.get("/v1/state/:roomId", async (c) => {
  const q = parseValue(c.req.query(), eventIdQuery, "M_MISSING_PARAM");
  const { stub } = await roomFor(c, c.req.param("roomId"));
  const r = unwrap(await stub.fedStateAt(c.var.origin, q.event_id, false));
  return c.body(`{"pdus":${r.pdusJson!},"auth_chain":${r.authChainJson!}}`, 200, { "content-type": "application/json" });
});

federationRooms.get("/v1/state_ids/:roomId", async (c) => {
  const q = parseValue(c.req.query(), eventIdQuery, "M_MISSING_PARAM");
  const { stub } = await roomFor(c, c.req.param("roomId"));
  const r = unwrap(await stub.fedStateAt(c.var.origin, q.event_id, true));
  return c.json({ pdu_ids: r.pdu_ids!, auth_chain_ids: r.auth_chain_ids! });
});

federationRooms.get("/v1/event_auth/:roomId/:eventId", async (c) => {
  const { roomId, eventId } = c.req.param();
  const { stub } = await roomFor(c, roomId);
  return c.json({ auth_chain: unwrap(await stub.fedEventAuth(c.var.origin, eventId)) as unknown as JsonObject[] });
});

federationRooms.get("/v1/backfill/:roomId", async (c) => {
  const v = c.req.queries("v") ?? [];
  if (v.length === 0) throw new MatrixError(400, "M_MISSING_PARAM", "v is required");
  const limit = Math.min(MAX_BACKFILL, Math.max(1, Number(c.req.query("limit") ?? "10") || 10));
  const { stub } = await roomFor(c, c.req.param("roomId"));
  return c.json(txnEnvelope(c, unwrap(await stub.fedBackfill(c.var.origin, v.slice(0, 20), limit))));
});

const missingBody = z.object({
  earliest_events: z.array(z.string()).max(100),
  latest_events: z.array(z.string()).min(1).max(20),
  limit: z.number().int().optional(),
  min_depth: z.number().int().optional(),
});

federationRooms.post("/v1/get_missing_events/:roomId", async (c) => {
  const body = await parseBody(c, missingBody);
  const { stub } = await roomFor(c, c.req.param("roomId"));
  const limit = Math.min(MAX_MISSING, Math.max(1, body.limit ?? 10));
  return c.json({ events: unwrap(await stub.fedMissingEvents(c.var.origin, body.earliest_events, body.latest_events, limit, body.min_depth ?? 0)) as unknown as JsonObject[] });
});
