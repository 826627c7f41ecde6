// The deprecated r0 sync endpoints (spec: data/api/client-server/old_sync.yaml and
// old_sync.yaml's GET /events/{eventId}), still used by bots and older clients:
//   GET /events            the account's event stream from `from` (a /sync token)
//   GET /initialSync       every room's state and latest messages
//   GET /events/{eventId}  one event, from any room the user is or was in
// Built on /sync (syncResponse: the same hub, tokens, filters and visibility) and the RoomDO's
// client reads; the peeking form of GET /events (with room_id) is in peeking.ts.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { invalidParam, MatrixError } from "../errors";
import type { JsonObject } from "../../core/types";
import { requireAuth } from "../middleware/auth";
import { syncResponse } from "./sync";
import { roomStub } from "../../services/rooms";
import { getRoomVisibility } from "../../services/room-directory";
import { roomsEverJoined } from "../../db/memberships";
import { ignoredUserIds } from "../../services/notifier";

export const oldSync = new Hono<AppEnv>();

/** Upper bound on how long one request is held. */
const EVENTS_TIMEOUT_MS = 30_000;
/** /sync filter that returns no events, only a position (GET /events without `from`). */
const NOTHING = JSON.stringify({
  room: { rooms: [], timeline: { limit: 0 }, state: { types: [] }, ephemeral: { types: [] }, account_data: { types: [] } },
  presence: { types: [] },
  account_data: { types: [] },
});
/** Rooms asked for GET /events/{eventId}, and how many at once. */
const MAX_ROOMS_SEARCHED = 200;
const LOOKUP_CONCURRENCY = 16;

function nonNegativeInt(c: Context<AppEnv>, name: string, dflt: number): number {
  const raw = c.req.query(name);
  if (raw === undefined || raw === "") return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw invalidParam(`${name} must be a non-negative integer`);
  return n;
}

type Sync = { next_batch: string; rooms: Record<string, Record<string, JsonObject>>; presence: { events: JsonObject[] }; account_data: { events: JsonObject[] } };
type Events = { events?: JsonObject[] };

/** GET /events without room_id: "listen for new events and return them", blocking until one
 *  arrives or `timeout`. `from` is a /sync `next_batch` or an earlier answer's `end`; without it
 *  the stream starts now. The chunk holds the timeline events of the user's rooms (with
 *  `room_id`), their typing and receipt events, and presence, in /sync's order. A room with more
 *  new events than /sync's timeline limit gives only the newest (as /sync does). */
export async function accountEvents(c: Context<AppEnv>): Promise<JsonObject> {
  // No `timeout`: answer at once, as /sync does (the spec names no default; Synapse waits 30 s).
  const timeout = Math.min(nonNegativeInt(c, "timeout", 0), EVENTS_TIMEOUT_MS);
  let from = c.req.query("from") || undefined;
  if (from === undefined) from = ((await syncResponse(c, { filter: NOTHING, full_state: false, use_state_after: false, "org.matrix.msc4222.use_state_after": false })) as Sync).next_batch;
  const s = (await syncResponse(c, { since: from, timeout, full_state: false, use_state_after: false, "org.matrix.msc4222.use_state_after": false })) as Sync;
  const chunk: JsonObject[] = [];
  for (const section of ["join", "leave"]) {
    for (const [roomId, room] of Object.entries(s.rooms[section] ?? {})) {
      for (const ev of (room.timeline as Events | undefined)?.events ?? []) chunk.push({ ...ev, room_id: roomId });
      for (const ev of (room.ephemeral as Events | undefined)?.events ?? []) chunk.push({ ...ev, room_id: roomId });
    }
  }
  chunk.push(...s.presence.events);
  return { start: from, end: s.next_batch, chunk };
}

/** The user's membership in a left room, from the events /sync gave for it. */
function leftMembership(room: JsonObject, userId: string): string {
  const evs = [...(((room.state as Events | undefined)?.events) ?? []), ...(((room.timeline as Events | undefined)?.events) ?? [])];
  const mine = evs.filter((e) => e.type === "m.room.member" && e.state_key === userId).pop();
  return ((mine?.content as JsonObject | undefined)?.membership as string | undefined) === "ban" ? "ban" : "leave";
}

/** State events of a /sync room entry as current state: `state` then the timeline's state
 *  events, the last per (type, state_key). */
function currentState(room: JsonObject, roomId: string): JsonObject[] {
  const byKey = new Map<string, JsonObject>();
  for (const e of [...(((room.state as Events | undefined)?.events) ?? []), ...(((room.timeline as Events | undefined)?.events) ?? [])]) {
    if (typeof e.state_key === "string") byKey.set(`${e.type}\u0000${e.state_key}`, { ...e, room_id: roomId });
  }
  return [...byKey.values()];
}

/** GET /initialSync: every joined and invited room (and with `archived=true` left ones) with
 *  its current state and latest `limit` messages (default 20, as /rooms/{roomId}/initialSync),
 *  presence and account data; `end` is where GET /events continues. */
oldSync.get("/initialSync", requireAuth, async (c) => {
  const limit = Math.min(nonNegativeInt(c, "limit", 20), 100);
  const archivedRaw = c.req.query("archived");
  if (archivedRaw !== undefined && !["true", "false"].includes(archivedRaw)) throw invalidParam("archived must be true or false");
  const archived = archivedRaw === "true";
  const filter = JSON.stringify({ room: { timeline: { limit }, include_leave: archived } });
  const s = (await syncResponse(c, { filter, full_state: false, use_state_after: false, "org.matrix.msc4222.use_state_after": false })) as Sync;
  const userId = c.var.auth.userId;
  const rooms: JsonObject[] = [];
  const withRoom = (evs: JsonObject[] | undefined, roomId: string) => (evs ?? []).map((e) => ({ ...e, room_id: roomId }));
  const entry = async (roomId: string, room: JsonObject, membership: string): Promise<JsonObject> => {
    const timeline = room.timeline as { events?: JsonObject[]; prev_batch?: string };
    const messages: JsonObject = { chunk: withRoom(timeline?.events, roomId), end: s.next_batch };
    if (timeline?.prev_batch) messages.start = timeline.prev_batch;
    return {
      room_id: roomId,
      membership,
      messages,
      state: currentState(room, roomId),
      visibility: await getRoomVisibility(c.env, roomId),
      account_data: ((room.account_data as Events | undefined)?.events ?? []) as JsonObject[],
    };
  };
  for (const [roomId, room] of Object.entries(s.rooms.join ?? {})) rooms.push(await entry(roomId, room, "join"));
  for (const [roomId, room] of Object.entries(s.rooms.leave ?? {})) rooms.push(await entry(roomId, room, leftMembership(room, userId)));
  for (const [roomId, room] of Object.entries(s.rooms.invite ?? {})) {
    const stripped = ((room.invite_state as Events | undefined)?.events ?? []) as JsonObject[];
    const out: JsonObject = { room_id: roomId, membership: "invite", state: withRoom(stripped, roomId) };
    const invite = stripped.find((e) => e.type === "m.room.member" && e.state_key === userId);
    if (invite) out.invite = { ...invite, room_id: roomId };
    rooms.push(out);
  }
  return c.json({ end: s.next_batch, rooms, presence: s.presence.events, account_data: s.account_data.events });
});

/** GET /events/{eventId}: "You must have permission to retrieve this event e.g. by being a
 *  member in the room for this event." The event is looked for in the rooms the user is or was
 *  in (at most MAX_ROOMS_SEARCHED), each RoomDO applying history visibility as for
 *  /rooms/{roomId}/event/{eventId}; 404 M_NOT_FOUND otherwise. */
oldSync.get("/events/:eventId", requireAuth, async (c) => {
  const eventId = c.req.param("eventId");
  if (!eventId.startsWith("$") || eventId.length > 255) throw invalidParam("Not an event ID");
  const { userId, deviceId } = c.var.auth;
  const [everIn, ignored] = await Promise.all([roomsEverJoined(c.env.DB, userId), ignoredUserIds(c.env, userId, c.var.config)]);
  const rooms = everIn.slice(0, MAX_ROOMS_SEARCHED);
  let found: JsonObject | undefined;
  let next = 0;
  const worker = async () => {
    while (!found && next < rooms.length) {
      const roomId = rooms[next++];
      const r = await roomStub(c.env, c.var.config, roomId)
        .getEventForClient({ userId, deviceId, ignored }, eventId)
        .catch(() => null);
      if (r?.ok && !found) found = r.value as JsonObject;
    }
  };
  await Promise.all(Array.from({ length: Math.min(LOOKUP_CONCURRENCY, rooms.length) }, worker));
  if (!found) throw new MatrixError(404, "M_NOT_FOUND", "Event not found");
  return c.json(found);
});
