// POST /v3/search (module "Server Side Search"): category room_events. Each room's Durable
// Object searches its own FTS5 index (durable-objects/room/search.ts); the Worker asks the rooms
// the user has been in, in parallel, and merges their hits by rank or recency.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { roomEventFilterSchema } from "../../core/room-event-filter";
import type { JsonObject } from "../../core/types";
import { roomStub, unwrap } from "../../services/rooms";
import { roomsWithAnyMembership } from "../../db/memberships";
import { ignoredUserIds } from "../../services/notifier";
import { SEARCH_KEYS, searchTerms, type RoomSearchHit } from "../../../durable-objects/room/search";

export const search = new Hono<AppEnv>();

/** Deepest page reachable with order_by rank (each room returns offset + limit hits). */
const MAX_OFFSET = 1000;
/** Rooms asked at once. */
const FAN_OUT = 50;

const contextSchema = z
  .object({
    before_limit: z.number().int().min(0).max(100).optional(),
    after_limit: z.number().int().min(0).max(100).optional(),
    include_profile: z.boolean().optional(),
  })
  .loose();

const bodySchema = z.object({
  search_categories: z
    .object({
      room_events: z
        .object({
          search_term: z.string().max(1000),
          keys: z.array(z.enum(SEARCH_KEYS)).optional(),
          filter: roomEventFilterSchema.optional(),
          order_by: z.enum(["rank", "recent"]).optional(),
          event_context: contextSchema.optional(),
          include_state: z.boolean().optional(),
          groupings: z.object({ group_by: z.array(z.object({ key: z.enum(["room_id", "sender"]) }).loose()).max(2).optional() }).loose().optional(),
        })
        .loose()
        .optional(),
    })
    .loose(),
});

type Cursor = { o: "rank"; n: number } | { o: "recent"; ts: number; id: string };

function encodeCursor(c: Cursor): string {
  return btoa(JSON.stringify(c)).replace(/=+$/, "");
}
function decodeCursor(raw: string, orderBy: "rank" | "recent"): Cursor {
  try {
    const c = JSON.parse(atob(raw)) as Cursor;
    if (c.o === "rank" && orderBy === "rank" && Number.isInteger(c.n) && c.n >= 0 && c.n <= MAX_OFFSET) return c;
    if (c.o === "recent" && orderBy === "recent" && Number.isFinite(c.ts) && typeof c.id === "string") return c;
  } catch {
    // fall through
  }
  throw new MatrixError(400, "M_INVALID_PARAM", "Invalid next_batch");
}

async function inBatches<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n) out.push(...(await Promise.all(items.slice(i, i + n).map(fn))));
  return out;
}

search.post("/search", requireAuth, async (c) => {
  const body = await parseBody(c, bodySchema);
  const cat = body.search_categories.room_events;
  if (!cat) return c.json({ search_categories: {} });
  const userId = c.var.auth.userId;
  const orderBy = cat.order_by ?? "rank";
  const nextBatch = c.req.query("next_batch");
  const cursor: Cursor = nextBatch ? decodeCursor(nextBatch, orderBy) : orderBy === "rank" ? { o: "rank", n: 0 } : { o: "recent", ts: Number.MAX_SAFE_INTEGER, id: "" };
  const filter = cat.filter;
  const limit = Math.max(1, Math.min(filter?.limit ?? 10, 100));

  // "all rooms that the user has been in, including those that they have left".
  const [everIn, ignored] = await Promise.all([roomsWithAnyMembership(c.env.DB, userId, ["join", "leave", "ban"]), ignoredUserIds(c.env, userId, c.var.config)]);
  let roomIds = everIn;
  if (filter?.rooms) roomIds = roomIds.filter((r) => filter.rooms!.includes(r));
  if (filter?.not_rooms) roomIds = roomIds.filter((r) => !filter.not_rooms!.includes(r));

  const offset = cursor.o === "rank" ? cursor.n : 0;
  const ctx = cat.event_context;
  // Events of users the searcher ignores are left out (hits, count, context).
  const requester = { userId, deviceId: c.var.auth.deviceId, ignored };
  const query = {
    term: cat.search_term,
    keys: cat.keys ?? [...SEARCH_KEYS],
    orderBy,
    filter,
    limit: offset + limit + 1,
    before: cursor.o === "recent" && cursor.id !== "" ? { ts: cursor.ts, eventId: cursor.id } : undefined,
    context: ctx ? { before: ctx.before_limit ?? 5, after: ctx.after_limit ?? 5, includeProfile: ctx.include_profile ?? false } : undefined,
  };
  // Two phases: every room ranks its hits (positions only), then the rooms holding the merged
  // page's hits serialise those (with bundled relations and context).
  // A search of one room takes one round trip: the room serialises the page's hits at once.
  const onePhase = roomIds.length === 1;
  // One stub per room for both phases.
  const stubs = new Map(roomIds.map((r) => [r, roomStub(c.env, c.var.config, r)]));
  const perRoom = await inBatches(roomIds, FAN_OUT, async (roomId) => {
    const r = await stubs.get(roomId)!.searchEvents(requester, onePhase ? { ...query, page: { from: offset, to: offset + limit } } : { ...query, idsOnly: true });
    // A room the user can no longer read (e.g. purged) contributes nothing.
    return { roomId, value: r.ok ? r.value : { hits: [], count: 0 } };
  });

  const all: (RoomSearchHit & { roomId: string })[] = [];
  let count = 0;
  for (const p of perRoom) {
    count += p.value.count;
    for (const h of p.value.hits) all.push({ ...h, roomId: p.roomId });
  }
  if (orderBy === "rank") all.sort((a, b) => b.rank - a.rank || b.ts - a.ts);
  else all.sort((a, b) => b.ts - a.ts || (a.eventId < b.eventId ? 1 : a.eventId > b.eventId ? -1 : 0));
  const ranked = all.slice(offset, offset + limit);
  const more = all.length > offset + limit;
  const byRoom = new Map<string, string[]>();
  for (const h of ranked) byRoom.set(h.roomId, [...(byRoom.get(h.roomId) ?? []), h.eventId]);
  const fetched = new Map<string, RoomSearchHit>();
  if (onePhase) {
    for (const h of ranked) if (h.result) fetched.set(h.eventId, h);
  } else {
    await Promise.all(
      [...byRoom].map(async ([roomId, ids]) => {
        const r = await stubs.get(roomId)!.searchEvents(requester, { ...query, fetch: ids });
        if (r.ok) for (const h of r.value.hits) fetched.set(h.eventId, h);
      }),
    );
  }
  // A hit that became invisible or redacted between the phases is left out of this page.
  const page = ranked.filter((h) => fetched.has(h.eventId)).map((h) => ({ ...h, result: fetched.get(h.eventId)!.result!, context: fetched.get(h.eventId)!.context }));

  const results = page.map((h) => {
    const r: JsonObject = { rank: h.rank, result: h.result };
    if (h.context) r.context = h.context;
    return r;
  });
  const out: JsonObject = { count, results, highlights: searchTerms(cat.search_term) };
  if (more) {
    const last = ranked[ranked.length - 1];
    out.next_batch = encodeCursor(orderBy === "rank" ? { o: "rank", n: Math.min(offset + limit, MAX_OFFSET) } : { o: "recent", ts: last.ts, id: last.eventId });
    if (orderBy === "rank" && offset + limit >= MAX_OFFSET) delete out.next_batch;
  }
  const groupBy = cat.groupings?.group_by ?? [];
  if (groupBy.length) {
    const groups: JsonObject = {};
    for (const { key } of groupBy) {
      const g: Record<string, { results: string[]; order: number }> = {};
      page.forEach((h) => {
        const v = key === "room_id" ? h.roomId : (h.result.sender as string);
        (g[v] ??= { results: [], order: Object.keys(g).length + 1 }).results.push(h.eventId);
      });
      groups[key] = g as unknown as JsonObject;
    }
    out.groups = groups;
  }
  if (cat.include_state) {
    const state: JsonObject = {};
    const rooms = [...new Set(page.map((h) => h.roomId))];
    await inBatches(rooms, FAN_OUT, async (roomId) => {
      const r = await stubs.get(roomId)!.getState({ userId });
      if (r.ok) state[roomId] = unwrap(r) as unknown as JsonObject;
    });
    out.state = state;
  }
  return c.json({ search_categories: { room_events: out } });
});
