// Simplified Sliding Sync (MSC4186, "native sliding sync"): POST
// /_matrix/client/unstable/org.matrix.simplified_msc3575/sync. The sync Element X and Element
// Web's new room list use.
//
// 1. The hub (UserDO, durable-objects/sliding-conn.ts) checks `pos`, waits (long-poll) until
//    something changed after it, computes the lists (core/sliding-lists.ts: filter, sort by
//    recency, window by ranges) and returns the windows, the rooms shown and the extensions'
//    data. Only the windows cross the RPC, not the user's whole room list.
// 2. Facts the hub may lack are read here first: the children of `spaces` filters, and (once)
//    the type of rooms whose create event the hub never saw.
// 3. Each room in a window or subscription is compared with what the connection was sent: a
//    room new to it comes whole (`initial`), a room that moved comes as a delta from the room
//    stream sent; RoomDO.syncRoom serves either, with state_after semantics (`required_state`
//    holds the state changes up to the end of the timeline, MSC4186). What is read from the
//    RoomDOs (a room's entry, room types, space children) is in sliding-sync-rooms.ts.
// 4. The hub stores the state the response leaves the connection in and names it by the new pos.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody, parseValue } from "../validate";
import { userStub } from "../../services/notifier";
import type { JsonObject } from "../../core/types";
import {
  configKey,
  mergeRequiredState,
  sameConfig,
  type ListFilters,
  type Range,
  type RequiredState,
} from "../../core/sliding-lists";
import type { BeginRequest, BeginResult, CommitRequest, ConnState, ExtConfig, RoomConfig, RoomDetails, SentRoom, SlidingResult } from "../../rpc/sliding";
import { threadSubscriptionToken, threadSubscriptionsBody } from "../../../durable-objects/user/thread-subscriptions";
import { inviteRoom, roomData, roomTypesOf, ROOM_CONCURRENCY, spaceChildrenOf } from "./sliding-sync-rooms";

interface SlidingHubRpc {
  slidingBegin(userId: string, req: BeginRequest): Promise<SlidingResult<BeginResult>>;
  slidingCommit(userId: string, req: CommitRequest): Promise<string>;
}

export const slidingSync = new Hono<AppEnv>();

// ---------------------------------------------------------------------------------------------
// Request. Unknown top-level keys and unknown extensions are ignored (clients send newer ones,
// e.g. matrix-js-sdk's sticky events extension); wrong shapes are 400 M_BAD_JSON naming the
// field; an unknown list filter is 400 M_INVALID_PARAM (ignoring it would show a wrong list).

const MAX_RANGE_END = 2 ** 31 - 1;
const stateKeyPair = z.tuple([z.string().max(255), z.string().max(255)]);
const requiredState = z.array(stateKeyPair).max(100);
const timelineLimit = z.number().int().min(0).max(1000);
const roomId = z.string().min(2).max(255).regex(/^!/, "must be a room ID");

const filtersSchema = z.strictObject({
  is_dm: z.boolean().optional(),
  is_encrypted: z.boolean().optional(),
  is_invite: z.boolean().optional(),
  room_types: z.array(z.string().max(255).nullable()).max(50).optional(),
  not_room_types: z.array(z.string().max(255).nullable()).max(50).optional(),
  spaces: z.array(roomId).max(50).optional(),
});

const listSchema = z.object({
  ranges: z
    .array(z.tuple([z.number().int().min(0).max(MAX_RANGE_END), z.number().int().min(0).max(MAX_RANGE_END)]).refine(([a, b]) => a <= b, "range start after its end"))
    .max(100)
    .optional(),
  required_state: requiredState.optional(),
  timeline_limit: timelineLimit.optional(),
  filters: z.unknown().optional(),
});

const roomConfigSchema = z.object({ required_state: requiredState.optional(), timeline_limit: timelineLimit.optional() });
const scope = { lists: z.array(z.string().max(100)).max(100).optional(), rooms: z.array(z.string().max(255)).max(1000).optional() };
const extensionsSchema = z.object({
  to_device: z.object({ enabled: z.boolean().optional(), since: z.string().max(100).optional(), limit: z.number().int().min(1).max(1000).optional() }).optional(),
  e2ee: z.object({ enabled: z.boolean().optional() }).optional(),
  account_data: z.object({ enabled: z.boolean().optional(), ...scope }).optional(),
  receipts: z.object({ enabled: z.boolean().optional(), ...scope }).optional(),
  typing: z.object({ enabled: z.boolean().optional(), ...scope }).optional(),
  // MSC4308 (with THREAD_SUBSCRIPTIONS=on; ignored like any unknown extension otherwise).
  "io.element.msc4308.thread_subscriptions": z.object({ enabled: z.boolean().optional(), limit: z.number().int().min(1).optional() }).optional(),
});

const bodySchema = z.object({
  conn_id: z.string().max(100).optional(),
  lists: z
    .record(z.string().max(100), listSchema)
    .refine((l) => Object.keys(l).length <= 100, "at most 100 lists")
    .optional(),
  room_subscriptions: z
    .record(roomId, roomConfigSchema)
    .refine((s) => Object.keys(s).length <= 1000, "at most 1000 room subscriptions")
    .optional(),
  unsubscribe_rooms: z.array(z.string().max(255)).max(1000).optional(),
  extensions: extensionsSchema.optional(),
  // Accepted in the body too (the MSC has them as query parameters).
  pos: z.string().max(100).optional(),
  timeout: z.number().int().min(0).optional(),
});

const querySchema = z.object({
  pos: z.string().max(100).optional(),
  timeout: z.coerce.number().int().min(0).optional(),
});

type Body = z.infer<typeof bodySchema>;
type ListReq = z.infer<typeof listSchema> & { filters?: ListFilters };

const MAX_TIMEOUT_MS = 5 * 60_000;
/** Room subscriptions a connection keeps (sticky across requests). */
const MAX_STICKY_SUBS = 1000;

/** The request's extensions as the hub takes them: MSC4308's only with thread subscriptions on. */
function extensionsFor(c: Context<AppEnv>, ext: Body["extensions"]): ExtConfig | undefined {
  if (!ext || c.var.config.threadSubscriptions || !ext["io.element.msc4308.thread_subscriptions"]) return ext as ExtConfig | undefined;
  const { "io.element.msc4308.thread_subscriptions": _, ...rest } = ext;
  return rest as ExtConfig;
}

// ---------------------------------------------------------------------------------------------

slidingSync.post("/sync", requireAuth, async (c) => {
  const q = parseValue(c.req.query(), querySchema);
  const body = await parseBody(c, bodySchema);
  const lists: Record<string, ListReq> = {};
  for (const [name, l] of Object.entries(body.lists ?? {})) {
    let filters: ListFilters | undefined;
    if (l.filters !== undefined) {
      const r = filtersSchema.safeParse(l.filters);
      if (!r.success) {
        const i = r.error.issues[0];
        const unknown = i.code === "unrecognized_keys";
        throw new MatrixError(400, unknown ? "M_INVALID_PARAM" : "M_BAD_JSON", `lists.${name}.filters: ${unknown ? `unknown filter ${(i as { keys: string[] }).keys.join(", ")}` : `${i.path.join(".")}: ${i.message}`}`);
      }
      filters = r.data;
    }
    lists[name] = { ...l, filters };
  }
  const { userId, deviceId } = c.var.auth;
  const pos = q.pos ?? body.pos;
  const timeout = q.timeout ?? body.timeout ?? 0;
  const connId = body.conn_id ?? "";
  const hub = userStub(c.env, userId, c.var.config) as unknown as SlidingHubRpc;
  const listKeys = Object.fromEntries(Object.entries(lists).map(([n, l]) => [n, JSON.stringify(l)]));
  // A long-poll is held at most 5 minutes, whatever the client asks.
  const deadline = Date.now() + Math.min(timeout, MAX_TIMEOUT_MS);
  const listSpecs = Object.fromEntries(Object.entries(lists).map(([n, l]) => [n, { ranges: (l.ranges ?? []) as Range[], filters: l.filters }]));
  const spaces = [...new Set(Object.values(lists).flatMap((l) => l.filters?.spaces ?? []))];
  const spaceChildren = spaces.length ? await spaceChildrenOf(c, spaces) : undefined;
  const subConfigs = Object.fromEntries(Object.entries(body.room_subscriptions ?? {}).map(([id, s]) => [id, roomConfigOf(s)]));
  let waitAfter: number | undefined;
  const timing: Record<string, number> = {};
  const lap = (name: string, t0: number) => (timing[name] = (timing[name] ?? 0) + (performance.now() - t0));
  for (;;) {
    let t0 = performance.now();
    const ask = (roomTypes?: Record<string, string | null>) =>
      hub.slidingBegin(userId, {
        deviceId,
        connId,
        pos,
        waitAfter,
        timeoutMs: roomTypes ? 0 : Math.max(0, deadline - Date.now()),
        noWait: !!roomTypes || (body.unsubscribe_rooms?.length ?? 0) > 0,
        extensions: extensionsFor(c, body.extensions),
        newSubs: Object.keys(body.room_subscriptions ?? {}),
        subConfigs,
        unsubscribe: body.unsubscribe_rooms ?? [],
        listKeys,
        lists: listSpecs,
        spaceChildren,
        roomTypes,
      });
    let r = await ask();
    if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
    if (r.value.needTypes) {
      // room_types filters over rooms whose create event the hub never saw: read them once.
      r = await ask(await roomTypesOf(c, r.value.needTypes));
      if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
    }
    lap("begin", t0);
    const built = await buildResponse(c, r.value, body, lists, listKeys, lap);
    if (pos === undefined || !built.empty || Date.now() >= deadline) {
      t0 = performance.now();
      const newPos = await hub.slidingCommit(userId, { deviceId, connId, fromId: r.value.stateId, state: built.state, rooms: built.rooms });
      lap("commit", t0);
      // Where the time went (Server-Timing; the begin phase includes any long-poll wait).
      c.header("Server-Timing", Object.entries(timing).map(([k, v]) => `${k};dur=${v.toFixed(1)}`).join(", "));
      return c.json({ pos: newPos, ...built.response });
    }
    waitAfter = r.value.q;
  }
});

// ---------------------------------------------------------------------------------------------

interface Built {
  response: JsonObject;
  state: ConnState;
  /** The rooms this response changed, as the connection now has them. */
  rooms: Record<string, SentRoom>;
  /** Nothing the client would act on (keep long-polling). */
  empty: boolean;
}

/** Where a room is shown: the lists whose window holds it and whether it is subscribed. */
interface Shown {
  lists: string[];
  sub: boolean;
  rs: RequiredState[];
  limit: number;
}

async function buildResponse(
  c: Context<AppEnv>,
  b: BeginResult,
  body: Body,
  lists: Record<string, ListReq>,
  listKeys: Record<string, string>,
  lap: (name: string, t0: number) => void,
): Promise<Built> {
  let t0 = performance.now();
  const { userId, deviceId } = c.var.auth;
  const prev: ConnState = b.state ?? { hubPos: -1, subs: {}, lists: {}, ext: {} };
  const hubRooms = new Map(b.rooms.map((r) => [r.roomId, r]));
  const direct = new Set(b.direct);

  // Room subscriptions are sticky until unsubscribed.
  const subs: Record<string, RoomConfig> = { ...prev.subs };
  for (const id of body.unsubscribe_rooms ?? []) delete subs[id];
  // Only a subscription that is new or changed makes the response worth sending by itself
  // (clients such as matrix-rust-sdk resend every subscription with every request).
  let subsChanged = false;
  for (const id of body.unsubscribe_rooms ?? []) if (prev.subs[id]) subsChanged = true;
  for (const [id, s] of Object.entries(body.room_subscriptions ?? {})) {
    const cfg = roomConfigOf(s);
    if (!prev.subs[id] || !sameConfig(prev.subs[id], cfg)) subsChanged = true;
    // Re-subscribing moves a room to the end (the most recent), so the cap drops old ones.
    delete subs[id];
    subs[id] = cfg;
  }
  // Sticky subscriptions are kept with every pos: bounded per connection, oldest dropped.
  const subIds = Object.keys(subs);
  for (const id of subIds.slice(0, Math.max(0, subIds.length - MAX_STICKY_SUBS))) delete subs[id];

  const shown = new Map<string, Shown>();
  const show = (id: string, rs: RequiredState, limit: number, list?: string) => {
    const s = shown.get(id) ?? { lists: [], sub: false, rs: [], limit: 0 };
    if (list === undefined) s.sub = true;
    else s.lists.push(list);
    s.rs.push(rs);
    s.limit = Math.max(s.limit, limit);
    shown.set(id, s);
  };
  // The hub computed the lists (filters, recency order, windows).
  const listOut: Record<string, JsonObject> = {};
  const listState: ConnState["lists"] = {};
  let listsChanged = false;
  for (const [name, l] of Object.entries(lists)) {
    const { count, window } = b.lists[name];
    for (const id of window) show(id, (l.required_state ?? []) as RequiredState, l.timeline_limit ?? 0, name);
    listOut[name] = { count };
    listState[name] = { key: listKeys[name], count };
    if (prev.lists[name]?.count !== count) listsChanged = true;
  }
  for (const [id, s] of Object.entries(subs)) {
    // Subscriptions to rooms the user is not in (and was not shown leaving) show nothing.
    if (!hubRooms.has(id)) continue;
    show(id, s.required_state as RequiredState, s.timeline_limit);
  }

  // Extension scopes: `lists` / `rooms` ("*" or absent: all).
  const ext = b.ext;
  const inScope = (e: { enabled?: boolean; lists?: string[]; rooms?: string[] } | undefined, id: string, s: Shown) =>
    !!e?.enabled &&
    ((s.lists.length > 0 && (!e.lists || e.lists.includes("*") || s.lists.some((l) => e.lists!.includes(l)))) ||
      (s.sub && (!e.rooms || e.rooms.includes("*") || e.rooms.includes(id))));

  const ids = [...shown.keys()];
  lap("lists", t0);
  t0 = performance.now();
  // Counts and ephemeral data came with slidingBegin, for the rooms that changed; an unchanged
  // room keeps the counts it was sent with.
  const details = b.details;
  // Only the rooms this response changes are written back (sliding_conn_rooms).
  const nextRooms: Record<string, SentRoom> = {};
  const roomsOut: Record<string, JsonObject> = {};
  let next = 0;
  const one = async (id: string) => {
    const s = shown.get(id)!;
    const hr = hubRooms.get(id)!;
    const sent = b.sent[id];
    const d: RoomDetails = details[id] ?? { unread: { notification_count: sent.n, highlight_count: sent.h } };
    const rs = mergeRequiredState(s.rs);
    const key = configKey(rs);
    const m = hr.membership;
    // New to the connection, or newly joined (the client held only the invite): the whole
    // room. Shown before with another required_state (it moved into a list with other needs):
    // the timeline as a delta, the state in full.
    const initial = !sent || (m === "join" && sent.m !== "join");
    const stateAgain = !initial && sent.k !== key;
    // MSC4186 "Changes to timeline_limit": a bigger limit than the room was last sent with
    // gets the latest `limit` events now (expanded_timeline), without waiting for news. A
    // connection stored before limits were recorded (no `l`) is not expanded.
    const expand = !initial && m === "join" && sent.l !== undefined && s.limit > sent.l;
    const moved = initial || stateAgain || expand || hr.stream > sent.s || sent.m !== m;
    const countsMoved = !sent || sent.n !== d.unread.notification_count || sent.h !== d.unread.highlight_count;
    if (!moved && !countsMoved) return;
    const entry: JsonObject = {};
    if (moved) {
      try {
        if (m === "invite" || m === "knock") Object.assign(entry, await inviteRoom(c, id, m, direct.has(id)));
        else Object.assign(entry, await roomData(c, id, rs, s.limit, initial ? null : sent.s, hr.stream, initial, stateAgain, direct.has(id), b.ignored, expand));
      } catch (e) {
        // One room that cannot be read now (e.g. a join still in progress) does not fail the
        // whole response: it is left out and, not recorded as sent, comes in a later one.
        console.error("sliding sync: room", id, e);
        return;
      }
      entry.bump_stamp = hr.bump;
    }
    if (m === "join") {
      entry.notification_count = d.unread.notification_count;
      entry.highlight_count = d.unread.highlight_count;
    }
    roomsOut[id] = entry;
    nextRooms[id] = { s: hr.stream, m, k: key, n: d.unread.notification_count, h: d.unread.highlight_count, l: moved ? s.limit : sent?.l };
  };
  const worker = async () => {
    while (next < ids.length) await one(ids[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(ROOM_CONCURRENCY, ids.length) }, worker));
  lap("rooms", t0);

  // Extensions.
  const extOut: JsonObject = {};
  let extData = false;
  if (b.toDevice) {
    extOut.to_device = b.toDevice;
    if (b.toDevice.events.length) extData = true;
  }
  if (b.e2ee) {
    extOut.e2ee = b.e2ee;
    if (b.e2ee.device_lists.changed.length || b.e2ee.device_lists.left.length || b.keys !== prev.keys) extData = true;
  }
  if (ext.account_data?.enabled) {
    const rooms: Record<string, JsonObject[]> = {};
    for (const id of ids) if (details[id]?.accountData && inScope(ext.account_data, id, shown.get(id)!)) rooms[id] = details[id]!.accountData!;
    extOut.account_data = { global: b.globalAccountData, rooms };
    if (b.globalAccountData.length || Object.keys(rooms).length) extData = true;
  }
  for (const k of ["receipts", "typing"] as const) {
    if (!ext[k]?.enabled) continue;
    const rooms: Record<string, JsonObject> = {};
    for (const id of ids) {
      const e = k === "receipts" ? details[id]?.receipts : details[id]?.typing;
      if (e && inScope(ext[k], id, shown.get(id)!)) rooms[id] = e;
    }
    extOut[k] = { rooms };
    if (Object.keys(rooms).length) extData = true;
  }

  if (b.threadSubscriptions) {
    // MSC4308: the newest changes after the connection's position; when some were left out,
    // `prev_batch` pages back through them (GET /thread_subscriptions, `to` = this request's pos).
    const { changes, more } = b.threadSubscriptions;
    const out: JsonObject = { ...threadSubscriptionsBody(changes) };
    if (more) out.prev_batch = threadSubscriptionToken(changes[0].upos - 1);
    extOut["io.element.msc4308.thread_subscriptions"] = out;
    if (changes.length) extData = true;
  }

  const stickyExt: ExtConfig = { ...ext };
  if (stickyExt.to_device) stickyExt.to_device = { ...stickyExt.to_device, since: undefined };
  return {
    response: { lists: listOut, rooms: roomsOut, extensions: extOut },
    state: { hubPos: b.q, subs, lists: listState, ext: stickyExt, keys: b.keys, chain: b.stateId === null ? [] : [...(prev.chain ?? []), b.stateId].slice(-16) },
    rooms: nextRooms,
    // A request that changes what it asks for is answered at once (the hub does not wait
    // either), even when the answer holds nothing new.
    empty:
      Object.keys(roomsOut).length === 0 &&
      !listsChanged &&
      !extData &&
      !subsChanged &&
      Object.keys(prev.lists).length === Object.keys(listKeys).length &&
      Object.entries(listKeys).every(([n, k]) => prev.lists[n]?.key === k),
  };
}

/** A room subscription as stored: MSC4186 has both fields required; absent ones are empty. */
function roomConfigOf(s: { required_state?: [string, string][]; timeline_limit?: number }): RoomConfig {
  return { required_state: s.required_state ?? [], timeline_limit: s.timeline_limit ?? 0 };
}
