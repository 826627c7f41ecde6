// Reading a room's history and members (spec: Client-Server API "Getting events for a room":
// /messages, /members, /joined_members, /timestamp_to_event; module "Event Context": /context).
// Every event served passes the room's history visibility check inside the RoomDO.
import { backfillFromRemote, pullTimestampFromRemote } from "../../services/federation/membership";
import { awaitFullState } from "../../services/federation/partial-state";
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { invalidParam } from "../errors";
import { MAX_JSON_DEPTH, nestedDeeperThan, queryLimit } from "../validate";
import { requireAuth } from "../middleware/auth";
import { knownRoom, roomStub, unwrap } from "../../services/rooms";
import { roomEventFilterSchema, type RoomEventFilter } from "../../core/room-event-filter";
import { ignoredUserIds, withoutIgnored } from "../../services/notifier";
import { roomPositionFromToken, roomToken } from "../../services/room-tokens";

export const timeline = new Hono<AppEnv>();
/** Routes under /_matrix/client/v1. */
export const timelineV1 = new Hono<AppEnv>();

async function roomFor(c: Context<AppEnv>) {
  const roomId = c.req.param("roomId")!;
  await knownRoom(c.env, roomId);
  return roomStub(c.env, c.var.config, roomId);
}

function requester(c: Context<AppEnv>) {
  return { userId: c.var.auth.userId, deviceId: c.var.auth.deviceId };
}

/** `filter` query parameter: a RoomEventFilter as JSON. (Filter IDs from POST /filter are the
 *  sync work's; an unknown ID is treated as no filter.) */
function parseFilter(raw: string | undefined): RoomEventFilter | undefined {
  if (!raw) return undefined;
  if (!raw.trimStart().startsWith("{")) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw invalidParam("filter is not valid JSON");
  }
  // Unknown keys are kept and the filter goes to the RoomDO: deep nesting overflowed the stack.
  if (nestedDeeperThan(raw, MAX_JSON_DEPTH)) throw invalidParam("filter is nested too deeply");
  const r = roomEventFilterSchema.safeParse(json);
  if (!r.success) throw invalidParam("filter is not a valid RoomEventFilter");
  return r.data;
}

timeline.get("/rooms/:roomId/messages", requireAuth, async (c) => {
  const dir = c.req.query("dir") ?? "b";
  if (dir !== "b" && dir !== "f") throw invalidParam("dir must be b or f");
  const filter = parseFilter(c.req.query("filter"));
  const limit = queryLimit(c.req.query("limit"), { dflt: filter?.limit ?? 10, max: 1000 });
  const roomId = c.req.param("roomId");
  const [stub, ignored] = await Promise.all([roomFor(c), ignoredUserIds(c.env, c.var.auth.userId, c.var.config)]);
  // `from`/`to` may be /sync tokens as well as our room tokens (services/room-tokens.ts).
  const at = (t: string | undefined, prefer: "earlier" | "later") => roomPositionFromToken(c.env, c.var.config, c.var.auth.userId, roomId, t, prefer);
  const [from, to] = await Promise.all([at(c.req.query("from"), dir === "b" ? "later" : "earlier"), at(c.req.query("to"), dir === "b" ? "earlier" : "later")]);
  const query = { dir: dir as "b" | "f", from: roomToken(from), to: roomToken(to), limit, filter };
  const req = { ...requester(c), ignored };
  let res = unwrap(await stub.getMessages(req, query));
  // Paging back past the oldest event we hold in a room joined over federation: ask a
  // resident server for more (/backfill), then answer from what we now hold. Bounded.
  for (let i = 0; i < 3 && dir === "b" && res.chunk.length < limit && !query.to; i++) {
    const got = await backfillFromRemote(c.env, c.var.config, c.req.param("roomId"), Math.max(limit * 2, 50)).catch(() => 0);
    if (got === 0) break;
    res = unwrap(await stub.getMessages(req, query));
  }
  // Module "Ignoring Users": ignored users' events never reach the client (state events
  // excepted). Dropped after paging, so `end` still continues exactly where the room stopped: a
  // chunk may be shorter than `limit` (even empty), which the spec allows.
  res.chunk = withoutIgnored(res.chunk, ignored);
  // `start`: "the same as the value given in `from`".
  if (c.req.query("from")) res.start = c.req.query("from")!;
  return c.json(res);
});

timeline.get("/rooms/:roomId/context/:eventId", requireAuth, async (c) => {
  const filter = parseFilter(c.req.query("filter"));
  const limit = queryLimit(c.req.query("limit"), { dflt: 10, max: 100 });
  const [stub, ignored] = await Promise.all([roomFor(c), ignoredUserIds(c.env, c.var.auth.userId, c.var.config)]);
  const res = unwrap(await stub.getContext({ ...requester(c), ignored }, c.req.param("eventId"), limit, filter));
  // Module "Ignoring Users" (as for /messages): the surrounding events skip ignored senders.
  res.events_before = withoutIgnored(res.events_before, ignored);
  res.events_after = withoutIgnored(res.events_after, ignored);
  return c.json(res);
});

const MEMBERSHIPS = new Set(["join", "invite", "knock", "leave", "ban"]);

timeline.get("/rooms/:roomId/members", requireAuth, async (c) => {
  const membership = c.req.query("membership");
  const notMembership = c.req.query("not_membership");
  if (membership !== undefined && !MEMBERSHIPS.has(membership)) throw invalidParam("Unknown membership");
  if (notMembership !== undefined && !MEMBERSHIPS.has(notMembership)) throw invalidParam("Unknown not_membership");
  const stub = await roomFor(c);
  await awaitFullState(c.env, c.var.config, c.req.param("roomId"));
  // `at`: a prev_batch (room token) or, as matrix-js-sdk and Hydrogen send it, a /sync next_batch.
  const at = await roomPositionFromToken(c.env, c.var.config, c.var.auth.userId, c.req.param("roomId"), c.req.query("at"), "later");
  const chunk = unwrap(await stub.getMembers(requester(c), { at: roomToken(at), membership, notMembership }));
  return c.json({ chunk });
});

timeline.get("/rooms/:roomId/joined_members", requireAuth, async (c) => {
  const stub = await roomFor(c);
  await awaitFullState(c.env, c.var.config, c.req.param("roomId"));
  return c.json({ joined: unwrap(await stub.getJoinedMembers(requester(c))) });
});

// GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] (module "Event
// relationships"). `from`/`to` are tokens as for /messages, /sync's next_batch included.
async function relations(c: Context<AppEnv>) {
  const dir = c.req.query("dir") ?? "b";
  if (dir !== "b" && dir !== "f") throw invalidParam("dir must be b or f");
  const recurseRaw = c.req.query("recurse");
  if (recurseRaw !== undefined && recurseRaw !== "true" && recurseRaw !== "false") throw invalidParam("recurse must be true or false");
  const limit = queryLimit(c.req.query("limit"), { dflt: 20, max: 100 });
  const roomId = c.req.param("roomId")!;
  const [stub, ignored] = await Promise.all([roomFor(c), ignoredUserIds(c.env, c.var.auth.userId, c.var.config)]);
  const at = (t: string | undefined, prefer: "earlier" | "later") => roomPositionFromToken(c.env, c.var.config, c.var.auth.userId, roomId, t, prefer);
  const [from, to] = await Promise.all([at(c.req.query("from"), dir === "b" ? "later" : "earlier"), at(c.req.query("to"), dir === "b" ? "earlier" : "later")]);
  const res = unwrap(
    await stub.getRelations({ ...requester(c), ignored }, {
      eventId: c.req.param("eventId")!,
      relType: c.req.param("relType"),
      eventType: c.req.param("eventType"),
      dir,
      from: roomToken(from),
      to: roomToken(to),
      limit,
      recurse: recurseRaw === undefined ? undefined : recurseRaw === "true",
    }),
  );
  res.chunk = withoutIgnored(res.chunk, ignored);
  // prev_batch: the token this page started from, as the client gave it.
  if (c.req.query("from")) res.prev_batch = c.req.query("from")!;
  return c.json(res);
}
timelineV1.get("/rooms/:roomId/relations/:eventId", requireAuth, relations);
timelineV1.get("/rooms/:roomId/relations/:eventId/:relType", requireAuth, relations);
timelineV1.get("/rooms/:roomId/relations/:eventId/:relType/:eventType", requireAuth, relations);

// GET /v1/rooms/{roomId}/threads (module "Threading"): thread roots by latest activity.
// `from` is a next_batch from this endpoint.
timelineV1.get("/rooms/:roomId/threads", requireAuth, async (c) => {
  const include = c.req.query("include") ?? "all";
  if (include !== "all" && include !== "participated") throw invalidParam("include must be all or participated");
  const from = c.req.query("from");
  if (from !== undefined && !/^t\d{1,15}$/.test(from)) throw invalidParam("Invalid from token");
  const limit = queryLimit(c.req.query("limit"), { dflt: 20, max: 100 });
  const [stub, ignored] = await Promise.all([roomFor(c), ignoredUserIds(c.env, c.var.auth.userId, c.var.config)]);
  const res = unwrap(await stub.getThreads({ ...requester(c), ignored }, { include, from, limit }));
  return c.json(res);
});

timelineV1.get("/rooms/:roomId/timestamp_to_event", requireAuth, async (c) => {
  const ts = Number(c.req.query("ts"));
  const dir = c.req.query("dir");
  if (!Number.isInteger(ts) || c.req.query("ts") === undefined) throw invalidParam("ts must be an integer");
  if (dir !== "f" && dir !== "b") throw invalidParam("dir must be f or b");
  const stub = await roomFor(c);
  let found = await stub.timestampToEvent(requester(c), ts, dir);
  // Not found, or found at the edge of the history we hold: other servers may know better.
  if (found.ok || found.errcode === "M_NOT_FOUND") {
    const local = found.ok ? found.value : null;
    if (await pullTimestampFromRemote(c.env, c.var.config, c.req.param("roomId"), ts, dir, local).catch(() => false)) {
      found = await stub.timestampToEvent(requester(c), ts, dir);
    }
  }
  return c.json(unwrap(found));
});
