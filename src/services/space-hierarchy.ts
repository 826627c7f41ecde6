// The space hierarchy (spec: Client-Server API "Discovering rooms within spaces", GET
// /_matrix/client/v1/rooms/{roomId}/hierarchy; Server-Server API "Spaces", GET
// /_matrix/federation/v1/hierarchy/{roomId}).
//
// Rooms we hold in full are summarised from their RoomDO; children we do not hold are asked for
// over federation from the servers in their m.space.child `via` (answers cached for 5 minutes in
// this isolate, as the spec suggests). Local data wins over remote data for rooms we hold.
import type { Env } from "../env";
import type { Config } from "../config";
import { forbidden, notFound } from "../api/errors";
import type { JsonObject } from "../core/types";
import { isValidRoomId, isValidServerName } from "../core/ids";
import { encodeHierarchyToken, sanitizeSummary, spaceChildren, type SpaceRoomSummary, type StrippedChild } from "../core/spaces";
import { publicRoomChunk, roomState } from "./room-directory";
import { roomStub } from "./rooms";
import { federationContext, federationRequest } from "./federation/client";

/** Defaults and caps (the spec asks servers to impose both for limit and max_depth). */
export const HIERARCHY_DEFAULT_LIMIT = 50;
export const HIERARCHY_MAX_LIMIT = 100;
export const HIERARCHY_MAX_DEPTH = 10;
/** Rooms looked at per request, whatever the page size (a walk re-runs from the root per page). */
const MAX_ROOMS_WALKED = 500;
/** Federation hierarchy requests per client request. */
const MAX_REMOTE_FETCHES = 10;
const REMOTE_CACHE_TTL_MS = 5 * 60_000;
const REMOTE_CACHE_MAX = 256;

const asObject = (v: unknown): JsonObject => (v && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : {});

/** What we know about a room we hold in full. */
export interface LocalRoom {
  summary: SpaceRoomSummary;
  /** All valid children (not filtered by suggested). */
  children: StrippedChild[];
  joinRule: string;
  allow: string[];
}

/** Summarise a room from its RoomDO, or undefined when we do not hold its full state (unknown
 *  room, or only an invite/knock stub). */
export async function localRoom(env: Env, config: Config, roomId: string): Promise<LocalRoom | undefined> {
  if (!isValidRoomId(roomId)) return undefined;
  // The registry first: room IDs here come from requests and from m.space.child state keys.
  if (!(await env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first())) return undefined;
  const stub = roomStub(env, config, roomId);
  const info = await stub.getPartialInfo();
  if (!info.roomVersion || info.partial) return undefined;
  const [chunk, childEvents, joinRules, encryption] = await Promise.all([
    publicRoomChunk(roomId, roomState(env, config, roomId)),
    stub.getCurrentStateOfType("m.space.child"),
    stub.getCurrentStateEvent("m.room.join_rules", ""),
    stub.getCurrentStateEvent("m.room.encryption", ""),
  ]);
  if (!chunk) return undefined;
  const rules = asObject(joinRules?.content);
  const allow = (Array.isArray(rules.allow) ? rules.allow : [])
    .map((a) => asObject(a))
    .filter((a) => a.type === "m.room_membership" && typeof a.room_id === "string" && isValidRoomId(a.room_id))
    .map((a) => a.room_id as string);
  const joinRule = typeof rules.join_rule === "string" ? rules.join_rule : "invite";
  const children = spaceChildren(childEvents, false);
  const summary: SpaceRoomSummary = { ...chunk, room_version: info.roomVersion, children_state: children };
  if (joinRule === "restricted" || joinRule === "knock_restricted") summary.allowed_room_ids = allow;
  const alg = asObject(encryption?.content).algorithm;
  if (alg === "m.megolm.v1.aes-sha2") summary.encryption = alg;
  return { summary, children, joinRule, allow };
}

/** The summary as shown for one request: children_state filtered by suggested_only. */
function shown(summary: SpaceRoomSummary, suggestedOnly: boolean): SpaceRoomSummary {
  return suggestedOnly ? { ...summary, children_state: summary.children_state.filter((c) => c.content.suggested === true) } : summary;
}

const openRules = new Set(["public", "knock", "knock_restricted"]);

/**
 * May `userId` see this room in a hierarchy? (spec: GET /hierarchy "rooms": joined; invited;
 * public join rule; restricted with a met condition; knockable; world_readable.) `allow` are the
 * restricted rule's rooms; membership in them is checked against the rooms we hold.
 */
export async function userMaySee(env: Env, config: Config, userId: string, roomId: string, s: { joinRule?: string; worldReadable: boolean; allow: string[] }): Promise<boolean> {
  if (s.worldReadable || openRules.has(s.joinRule ?? "")) return true;
  const membership = await roomStub(env, config, roomId).getMembership(userId).catch(() => null);
  if (membership === "join" || membership === "invite") return true;
  if (s.joinRule === "restricted" || s.joinRule === "knock_restricted") {
    for (const r of s.allow.slice(0, 20)) {
      if ((await roomStub(env, config, r).getMembership(userId).catch(() => null)) === "join") return true;
    }
  }
  return false;
}

/** Could `origin` peek or join this room? (spec: federation /hierarchy "Rooms which the
 *  requesting server cannot peek/join will be excluded".) Open or restricted join rules (the
 *  requesting server filters restricted rooms for its users with allowed_room_ids),
 *  world_readable history, or a user of that server joined. (Pending invites of that server's
 *  users are not looked at: they see the room through the invite's stripped state.) */
async function serverMaySee(env: Env, config: Config, origin: string, room: LocalRoom): Promise<boolean> {
  if (room.summary.world_readable || openRules.has(room.joinRule) || room.joinRule === "restricted") return true;
  const stub = roomStub(env, config, room.summary.room_id);
  const joined = await stub.getJoinedUserIds();
  if (joined.some((u) => u.endsWith(`:${origin}`))) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------
// Federation: serving.

export interface FederationHierarchy {
  room: SpaceRoomSummary;
  children: SpaceRoomSummary[];
  inaccessible_children: string[];
}

/** GET /_matrix/federation/v1/hierarchy/{roomId} for `origin`: 404 when we do not hold the room or
 *  the origin could not peek/join it. Children we do not hold are left out. */
export async function federationHierarchy(env: Env, config: Config, origin: string, roomId: string, suggestedOnly: boolean): Promise<FederationHierarchy> {
  const root = await localRoom(env, config, roomId);
  if (!root || !(await serverMaySee(env, config, origin, root))) throw notFound("Unknown room, or not accessible to your server");
  const out: FederationHierarchy = { room: shown(root.summary, suggestedOnly), children: [], inaccessible_children: [] };
  const kids = suggestedOnly ? root.children.filter((c) => c.content.suggested === true) : root.children;
  const rooms = await Promise.all(kids.slice(0, MAX_ROOMS_WALKED).map((c) => localRoom(env, config, c.state_key).catch(() => undefined)));
  for (let i = 0; i < rooms.length; i++) {
    const r = rooms[i];
    if (!r) continue;
    if (await serverMaySee(env, config, origin, r)) out.children.push(shown(r.summary, suggestedOnly));
    else out.inaccessible_children.push(r.summary.room_id);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Federation: asking another server.

const remoteCache = new Map<string, { expires: number; value: FederationHierarchy }>();

/** Test hook. */
export function clearHierarchyCache(): void {
  remoteCache.clear();
}

/** Ask the `via` servers (in order, at most 3) for a room's hierarchy. Undefined when none of
 *  them answers usefully. The answer is checked and trimmed to the spec's fields. */
export async function fetchRemoteHierarchy(env: Env, config: Config, roomId: string, via: string[], suggestedOnly: boolean): Promise<FederationHierarchy | undefined> {
  const servers = [...new Set(via)].filter((s) => s !== config.serverName && isValidServerName(s)).slice(0, 3);
  for (const server of servers) {
    const key = `${server}|${roomId}|${suggestedOnly ? 1 : 0}`;
    const hit = remoteCache.get(key);
    if (hit && hit.expires > Date.now()) return hit.value;
    try {
      const { body } = await federationRequest(federationContext(env, config), server, "GET", `/_matrix/federation/v1/hierarchy/${encodeURIComponent(roomId)}`, {
        query: { suggested_only: suggestedOnly ? "true" : "false" },
        timeoutMs: 10_000,
        maxBytes: 4 * 1024 * 1024,
      });
      const o = asObject(body);
      const room = sanitizeSummary(o.room);
      if (!room || room.room_id !== roomId) continue;
      const value: FederationHierarchy = {
        room,
        children: (Array.isArray(o.children) ? o.children : []).map(sanitizeSummary).filter((s): s is SpaceRoomSummary => !!s).slice(0, MAX_ROOMS_WALKED),
        inaccessible_children: (Array.isArray(o.inaccessible_children) ? o.inaccessible_children : []).filter((r): r is string => typeof r === "string"),
      };
      if (remoteCache.size >= REMOTE_CACHE_MAX) remoteCache.delete(remoteCache.keys().next().value!);
      remoteCache.set(key, { expires: Date.now() + REMOTE_CACHE_TTL_MS, value });
      return value;
    } catch {
      /* next server */
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Client: the depth-first walk.

export interface HierarchyRequest {
  userId: string;
  roomId: string;
  suggestedOnly: boolean;
  maxDepth: number;
  limit: number;
  offset: number;
}

interface QueueEntry {
  roomId: string;
  depth: number;
  via: string[];
}

/**
 * One page of GET /hierarchy. Depth-first, pre-order ("when it encounters another space as a
 * child it recurses into that space before returning non-space children"): a room, then each of
 * its children's subtrees in the spec's child order. Each room appears once (loops are broken).
 * Rooms the user may not see are left out together with their subtrees. The token holds the
 * number of rooms already returned; the next page re-walks from the root (cheap for local rooms,
 * remote answers come from the cache) and skips them.
 */
export async function clientHierarchy(env: Env, config: Config, req: HierarchyRequest): Promise<{ rooms: SpaceRoomSummary[]; next_batch?: string }> {
  const root = await localRoom(env, config, req.roomId);
  const rootVisible =
    root &&
    (await userMaySee(env, config, req.userId, req.roomId, { joinRule: root.joinRule, worldReadable: root.summary.world_readable, allow: root.allow }));
  if (!rootVisible) throw forbidden("You cannot view this room: it is unknown to this server or you may not peek or join it");

  const stack: QueueEntry[] = [{ roomId: req.roomId, depth: 0, via: [] }];
  const seen = new Set<string>();
  /** Summaries of remote rooms learned from a parent's federation answer. */
  const remoteKnown = new Map<string, SpaceRoomSummary>();
  const inaccessible = new Set<string>();
  const rooms: SpaceRoomSummary[] = [];
  let visible = 0;
  let walked = 0;
  let remoteFetches = 0;
  let more = false;

  while (stack.length > 0) {
    const entry = stack.pop()!;
    if (seen.has(entry.roomId) || inaccessible.has(entry.roomId)) continue;
    seen.add(entry.roomId);
    if (++walked > MAX_ROOMS_WALKED) break;

    let summary: SpaceRoomSummary | undefined;
    let children: StrippedChild[] = [];
    const local = entry.roomId === req.roomId ? root : await localRoom(env, config, entry.roomId).catch(() => undefined);
    if (local) {
      const ok =
        entry.roomId === req.roomId ||
        (await userMaySee(env, config, req.userId, entry.roomId, { joinRule: local.joinRule, worldReadable: local.summary.world_readable, allow: local.allow }));
      if (!ok) continue;
      summary = local.summary;
      children = local.children;
    } else {
      let known = remoteKnown.get(entry.roomId);
      // A space we would descend into needs its own children's summaries: ask for its hierarchy.
      const needFetch = !known || (known.room_type === "m.space" && entry.depth < req.maxDepth && known.children_state.length > 0);
      if (needFetch && remoteFetches < MAX_REMOTE_FETCHES) {
        remoteFetches++;
        const remote = await fetchRemoteHierarchy(env, config, entry.roomId, entry.via, req.suggestedOnly);
        if (remote) {
          known = remote.room;
          for (const c of remote.children) if (!remoteKnown.has(c.room_id)) remoteKnown.set(c.room_id, c);
          for (const r of remote.inaccessible_children) inaccessible.add(r);
        }
      }
      if (!known) continue;
      const ok = await userMaySee(env, config, req.userId, entry.roomId, {
        joinRule: known.join_rule,
        worldReadable: known.world_readable,
        allow: known.allowed_room_ids ?? [],
      });
      if (!ok) continue;
      summary = known;
      children = known.children_state;
    }

    if (visible >= req.offset + req.limit) {
      more = true;
      break;
    }
    if (visible >= req.offset) rooms.push(shown(summary, req.suggestedOnly));
    visible++;
    if (entry.depth < req.maxDepth) {
      const kids = req.suggestedOnly ? children.filter((c) => c.content.suggested === true) : children;
      for (let i = kids.length - 1; i >= 0; i--) {
        const via = Array.isArray(kids[i].content.via) ? (kids[i].content.via as string[]) : [];
        stack.push({ roomId: kids[i].state_key, depth: entry.depth + 1, via });
      }
    }
  }
  const out: { rooms: SpaceRoomSummary[]; next_batch?: string } = { rooms };
  if (more) out.next_batch = encodeHierarchyToken({ root: req.roomId, suggestedOnly: req.suggestedOnly, maxDepth: req.maxDepth, offset: req.offset + rooms.length });
  return out;
}
