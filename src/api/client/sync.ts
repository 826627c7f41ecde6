// GET /sync (spec: Client-Server API "Syncing"; OpenAPI client-server/sync.yaml).
//
// 1. The user's hub (UserDO) answers "what changed since this token" — waiting up to `timeout`
//    when nothing has — with, per changed room, the room stream range the client has not seen.
// 2. Only those rooms are asked for their view of that range (RoomDO.syncRoom), in parallel.
// 3. The filter shapes the result; if it leaves nothing and time remains, wait again from the new
//    token (a long-poll must not return early just because the change was filtered out).
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam } from "../errors";
import { requireAuth } from "../middleware/auth";
import { roomStub, unwrap } from "../../services/rooms";
import { fanOutPresence, userStub } from "../../services/notifier";
import { sendPresence } from "../../services/federation/edus";
import { resolveFilter } from "./filter";
import { applyEventFields, ephemeralWithoutIgnored, filterEvents, roomIncluded, roomSectionFilter, roomSyncFilter, timelineLimit, type Filter } from "../../core/filters";
import type { SyncDelta, SyncRoomDelta } from "../../rpc/user";
import type { LazyMembersRoom } from "../../rpc/user";
import type { JsonObject } from "../../core/types";
import type { Requester, RoomResult } from "../../rpc/room";
import type { RoomSyncQuery, RoomSyncView } from "../../rpc/room";

/** RoomDO.syncRoom (the generated stub type drops it: its RPC type instantiation is too deep). */
interface SyncRoomRpc {
  syncRoom(req: Requester, q: RoomSyncQuery): Promise<RoomResult<RoomSyncView>>;
}

export const sync = new Hono<AppEnv>();

const bool = z
  .enum(["true", "false", "1", "0"])
  .optional()
  .transform((v) => v === "true" || v === "1");

export const querySchema = z.object({
  since: z.string().max(200).optional(),
  timeout: z.coerce.number().int().min(0).optional(),
  full_state: bool,
  set_presence: z.enum(["offline", "online", "unavailable"]).optional(),
  use_state_after: bool,
  "org.matrix.msc4222.use_state_after": bool,
  filter: z.string().max(16_384).optional(),
});

/** How many RoomDOs one /sync asks at once. */
const ROOM_CONCURRENCY = 64;

interface SyncOptions {
  userId: string;
  deviceId: string;
  /** The token the client sent (the hub may be asked again from a later one while waiting). */
  since?: string;
  filter?: Filter;
  fullState: boolean;
  useStateAfter: boolean;
  /** Asked with the unstable parameter: answer under the unstable key as well as the stable
   *  one (MSC4222: `org.matrix.msc4222.state_after`). matrix-js-sdk asks this way and reads only
   *  the unstable key; without it a client that joins a room whose earlier state is not in the
   *  timeline (any federated join, any limited timeline) never learns m.room.encryption. */
  unstableStateAfter: boolean;
  threadCounts: boolean;
}

sync.get("/sync", requireAuth, async (c) => {
  const parsed = querySchema.safeParse(c.req.query());
  if (!parsed.success) throw invalidParam(`Invalid query: ${parsed.error.issues[0].path.join(".")}: ${parsed.error.issues[0].message}`);
  return c.json(await syncResponse(c, parsed.data));
});

/** The /sync answer for query `q` (also what the deprecated /events and /initialSync are built
 *  from, src/api/client/old-sync.ts). */
export async function syncResponse(c: Context<AppEnv>, q: z.infer<typeof querySchema>): Promise<JsonObject> {
  const { userId, deviceId } = c.var.auth;
  const filter = await resolveFilter(c, q.filter);
  const opts: SyncOptions = {
    userId,
    deviceId,
    since: q.since,
    filter,
    fullState: q.full_state,
    useStateAfter: q.use_state_after || q["org.matrix.msc4222.use_state_after"],
    unstableStateAfter: !q.use_state_after && q["org.matrix.msc4222.use_state_after"],
    threadCounts: !!filter?.room?.timeline?.unread_thread_notifications,
  };
  const hub = userStub(c.env, userId, c.var.config);

  // set_presence: "automatically marked as online when it uses this API" unless offline. The
  // hub applies it with the first sync call and says whether it changed.
  const setPresence = q.set_presence !== "offline" && c.env.PRESENCE !== "off" ? (q.set_presence ?? "online") : undefined;

  // full_state: "the timeout parameter will be ignored and the query will return immediately".
  const deadline = Date.now() + (q.full_state ? 0 : (q.timeout ?? 0));
  let since = q.since;
  for (;;) {
    const r = await hub.sync({
      userId,
      deviceId,
      since,
      timeoutMs: Math.max(0, deadline - Date.now()),
      fullState: opts.fullState,
      includeLeave: !!filter?.room?.include_leave,
      threadCounts: opts.threadCounts,
      setPresence: since === q.since ? setPresence : undefined,
    });
    if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
    const changedPresence = r.value.presenceChanged;
    if (changedPresence) {
      // To local room-mates (changes only: their copy would not reach their clients anyway, a
      // ping only moves its last active time) and to the servers sharing a room (Server-Server
      // API "Presence"): being online through /sync is how users are online. The hub
      // rate-limits pings (PRESENCE_PING_MS).
      const { ping, ...state } = changedPresence;
      if (!ping) c.executionCtx.waitUntil(fanOutPresence(c.env, c.var.config, userId, state).catch((e) => console.error("presence fan-out", e)));
      c.executionCtx.waitUntil(sendPresence(c.env, c.var.config, userId, state).catch((e) => console.error("m.presence EDU failed", e)));
    }
    const body = await buildResponse(c, r.value, opts);
    if (since === undefined || opts.fullState || !isEmpty(body) || Date.now() >= deadline) return body;
    since = r.value.nextBatch;
  }
}

/** Nothing a client would act on (used to keep long-polling). */
function isEmpty(body: JsonObject): boolean {
  const rooms = body.rooms as Record<string, JsonObject>;
  const sections = ["join", "invite", "leave", "knock"].some((k) => Object.keys(rooms[k] ?? {}).length > 0);
  const lists = (x: unknown) => ((x as { events?: unknown[] } | undefined)?.events?.length ?? 0) > 0;
  const dl = body.device_lists as { changed: string[]; left: string[] };
  return !sections && !lists(body.account_data) && !lists(body.presence) && !lists(body.to_device) && dl.changed.length === 0 && dl.left.length === 0;
}

async function buildResponse(c: Context<AppEnv>, d: SyncDelta, o: SyncOptions): Promise<JsonObject> {
  const f = o.filter;
  const ignored = new Set(d.ignoredUsers);
  const join: Record<string, JsonObject> = {};
  const invite: Record<string, JsonObject> = {};
  const leave: Record<string, JsonObject> = {};
  const knock: Record<string, JsonObject> = {};
  const rooms = d.rooms.filter((r) => roomIncluded(f?.room, r.roomId));
  // Rooms are fetched in parallel, at most ROOM_CONCURRENCY at a time.
  let next = 0;
  const worker = async () => {
    while (next < rooms.length) await one(rooms[next++]);
  };
  const one = async (r: SyncRoomDelta) => {
    switch (r.membership) {
      case "join": {
        const room = await joinedRoom(c, r, o, ignored);
        if (room) join[r.roomId] = room;
        break;
      }
      case "leave":
      case "ban": {
        leave[r.roomId] = await roomTimeline(c, r, o, ignored);
        const ad = roomSectionFilter(f?.room?.account_data, r.roomId, r.accountData);
        leave[r.roomId].account_data = { events: ad };
        break;
      }
      case "invite": {
        // Module "Ignoring Users": invites from ignored users are not shown.
        if (r.inviter && ignored.has(r.inviter)) break;
        invite[r.roomId] = { invite_state: { events: await strippedState(c, r.roomId, o.userId) } };
        break;
      }
      case "knock":
        knock[r.roomId] = { knock_state: { events: await strippedState(c, r.roomId, o.userId) } };
        break;
    }
  };
  await Promise.all(Array.from({ length: Math.min(ROOM_CONCURRENCY, rooms.length) }, worker));
  await dropRedundantMembers(c, d, o, { ...join, ...leave });
  // An incremental sync leaves out a joined room that has nothing left to say after filtering
  // (e.g. a display-name change that the filter removes): an empty entry would only look like
  // a change. Unread counts alone do not keep it (they move with events the client sees).
  for (const r of rooms) if (r.membership === "join" && r.since !== null && !o.fullState && join[r.roomId] && nothingNew(join[r.roomId])) delete join[r.roomId];
  const eventFields = (evs: JsonObject[]) => (f?.event_fields ? evs.map((e) => applyEventFields(e, f.event_fields)) : evs);
  for (const room of Object.values({ ...join, ...leave })) {
    const tl = room.timeline as { events: JsonObject[] };
    tl.events = eventFields(tl.events);
    for (const k of ["state", "state_after"]) if (room[k]) (room[k] as { events: JsonObject[] }).events = eventFields((room[k] as { events: JsonObject[] }).events);
    if (o.unstableStateAfter && room.state_after) room["org.matrix.msc4222.state_after"] = room.state_after;
  }
  return {
    next_batch: d.nextBatch,
    rooms: { join, invite, leave, knock },
    account_data: { events: filterEvents(f?.account_data, d.accountData as (JsonObject & { type: string })[]) },
    presence: { events: c.env.PRESENCE === "off" ? [] : filterEvents(f?.presence, d.presence as (JsonObject & { type: string; sender: string })[]) },
    to_device: { events: d.toDevice },
    device_lists: d.deviceLists,
    device_one_time_keys_count: d.oneTimeKeyCounts,
    device_unused_fallback_key_types: d.fallbackKeyTypes,
  };
}

/** A joined room entry with no events in any section and no gap. */
function nothingNew(room: JsonObject): boolean {
  const tl = room.timeline as { events: unknown[]; limited: boolean };
  const none = (k: string) => ((room[k] as { events?: unknown[] } | undefined)?.events?.length ?? 0) === 0;
  return tl.events.length === 0 && !tl.limited && none("state") && none("state_after") && none("ephemeral") && none("account_data");
}

/** Lazy-loading without include_redundant_members: leave out the member events this device
 *  already has, and record in the hub what this response carries (durable-objects/
 *  user/lazy-members.ts; keyed by the client's `since`, so a retried token gets them again). */
async function dropRedundantMembers(c: Context<AppEnv>, d: SyncDelta, o: SyncOptions, rooms: Record<string, JsonObject>): Promise<void> {
  const rf = roomSyncFilter(o.filter);
  const report: LazyMembersRoom[] = [];
  for (const [roomId, room] of Object.entries(rooms)) {
    const candidates = (room.lazyMembers ?? {}) as Record<string, string>;
    delete room.lazyMembers;
    if (!rf.lazyLoadMembers || rf.includeRedundantMembers) continue;
    // What the client ends up holding per member, in the order it applies the sections.
    const stateKey = room.state_after ? "state_after" : "state";
    const state = ((room[stateKey] as { events: JsonObject[] } | undefined)?.events ?? []) as JsonObject[];
    const timeline = (room.timeline as { events: JsonObject[] }).events;
    const sent: Record<string, string> = {};
    for (const e of stateKey === "state" ? [...state, ...timeline] : [...timeline, ...state]) {
      if (e.type === "m.room.member" && typeof e.state_key === "string" && candidates[e.state_key] !== e.event_id) sent[e.state_key] = e.event_id as string;
    }
    if (Object.keys(candidates).length || Object.keys(sent).length) report.push({ roomId, candidates, sent });
  }
  if (report.length === 0) return;
  const redundant = await userStub(c.env, o.userId, c.var.config).settleLazyMembers(o.userId, { deviceId: o.deviceId, since: o.since, nextBatch: d.nextBatch, rooms: report });
  for (const [roomId, users] of Object.entries(redundant)) {
    const room = rooms[roomId];
    const skip = new Set(users);
    for (const k of ["state", "state_after"]) {
      const sec = room[k] as { events: JsonObject[] } | undefined;
      if (sec) sec.events = sec.events.filter((e) => !(e.type === "m.room.member" && skip.has(e.state_key as string)));
    }
  }
}

/** Timeline and state of a room from its RoomDO for the hub's range (join and leave). */
async function roomTimeline(c: Context<AppEnv>, r: SyncRoomDelta, o: SyncOptions, ignored: Set<string>): Promise<JsonObject> {
  const rf = roomSyncFilter(o.filter);
  const result = await (roomStub(c.env, c.var.config, r.roomId) as unknown as SyncRoomRpc).syncRoom(
      { userId: o.userId, deviceId: o.deviceId },
      {
        since: r.since,
        upTo: r.upTo,
        gap: r.gap,
        newlyJoined: r.newlyJoined,
        limit: timelineLimit(o.filter),
        timeline: rf.timeline,
        state: rf.state,
        lazyLoadMembers: rf.lazyLoadMembers,
        fullState: o.fullState,
        useStateAfter: o.useStateAfter,
        ignoredSenders: ignored.size ? [...ignored] : undefined,
        eventFormat: o.filter?.event_format,
      },
  );
  // A room an admin deleted and purged (src/services/admin-rooms.ts) after the user's leave:
  // the leave is all there is to tell.
  if (!result.ok && result.errcode === "M_NOT_FOUND") return { timeline: { events: [], limited: false }, [o.useStateAfter ? "state_after" : "state"]: { events: [] } };
  return unwrap(result) as unknown as JsonObject;
}

async function joinedRoom(c: Context<AppEnv>, r: SyncRoomDelta, o: SyncOptions, ignored: Set<string>): Promise<JsonObject | null> {
  const f = o.filter;
  let room: JsonObject;
  if (r.since !== null && r.since >= r.upTo && !o.fullState && !r.gap) {
    // Nothing new in the timeline (only ephemeral, account data or counts changed).
    room = { timeline: { events: [], limited: false, prev_batch: `t${r.upTo}` } };
    room[o.useStateAfter ? "state_after" : "state"] = { events: [] };
  } else {
    room = await roomTimeline(c, r, o, ignored);
  }
  room.ephemeral = { events: ephemeralWithoutIgnored(roomSectionFilter(f?.room?.ephemeral, r.roomId, r.ephemeral), ignored) };
  room.account_data = { events: roomSectionFilter(f?.room?.account_data, r.roomId, r.accountData) };
  room.unread_notifications = r.unread;
  if (o.threadCounts) room.unread_thread_notifications = r.threads ?? {};
  return room;
}

/** Invite/knock state (spec: "Stripped state"): the room's stripped state plus my member event. */
async function strippedState(c: Context<AppEnv>, roomId: string, userId: string): Promise<JsonObject[]> {
  const stub = roomStub(c.env, c.var.config, roomId);
  const [stripped, me] = await Promise.all([stub.getStrippedState(), stub.getCurrentStateEvent("m.room.member", userId)]);
  const out = [...stripped];
  if (me) out.push({ type: me.type, state_key: me.state_key!, content: me.content, sender: me.sender });
  return out;
}
