// The published room directory (spec: Client-Server API "Published room directory") and the
// room-state reads that aliases and the directory need. Visibility lives in D1 (room_directory);
// everything about the room itself (name, topic, members, power levels) is read from its RoomDO,
// which is the only owner of room state.
import type { Env } from "../env";
import type { Config } from "../config";
import { roomStub } from "./rooms";
import { MatrixError } from "../api/errors";
import type { JsonObject, PublicRoomChunk, RoomEvent, StateMap } from "../core/types";
import { CREATE_KEY, POWER_LEVELS_KEY, memberKey, membershipOf, powerLevelOf, requiredPowerLevel } from "../core/auth-rules";
import { getRoomVersion } from "../core/room-versions";
import { decodeBase64, encodeBase64Url } from "../core/base64";
import { isValidRoomId } from "../core/ids";
import { FederationError, federationRequest, type FederationContext } from "./federation/client";

// ---------------------------------------------------------------------------------------------
// Visibility (D1).

export type Visibility = "public" | "private";

/** Set a room's directory visibility. createRoom calls this with its `visibility` (spec: createRoom
 *  "visibility: ... Defaults to private"); PUT /directory/list/room/{roomId} after its checks. */
export async function setRoomVisibility(env: Env, roomId: string, visibility: Visibility): Promise<void> {
  if (visibility === "private") {
    await env.DB.prepare("DELETE FROM room_directory WHERE room_id = ?").bind(roomId).run();
    return;
  }
  await publishStatement(env.DB, roomId).run();
}

/** Publishing a room as a statement (createRoom puts it in its D1 batch after the room is stored,
 *  durable-objects/room/local.ts). With `aliasOf`, only if that alias is the room's: createRoom
 *  publishes nothing when it lost the race for its alias (it answers M_ROOM_IN_USE), as when
 *  the two were separate writes. Re-publishing an already public room keeps its place in the
 *  listing order. */
export function publishStatement(db: D1Database, roomId: string, aliasOf?: string): D1PreparedStatement {
  if (aliasOf === undefined) {
    return db.prepare("INSERT INTO room_directory (room_id, visibility, published_ts) VALUES (?, 'public', ?) ON CONFLICT (room_id) DO NOTHING").bind(roomId, Date.now());
  }
  return db
    .prepare(
      "INSERT INTO room_directory (room_id, visibility, published_ts) SELECT ?1, 'public', ?2 WHERE EXISTS (SELECT 1 FROM room_aliases WHERE alias = ?3 AND room_id = ?1) ON CONFLICT (room_id) DO NOTHING",
    )
    .bind(roomId, Date.now(), aliasOf);
}

export async function getRoomVisibility(env: Env, roomId: string): Promise<Visibility> {
  const row = await env.DB.prepare("SELECT visibility FROM room_directory WHERE room_id = ?").bind(roomId).first<{ visibility: Visibility }>();
  return row?.visibility === "public" ? "public" : "private";
}

export async function countPublicRooms(env: Env): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM room_directory WHERE visibility = 'public'").first<{ n: number }>();
  return row?.n ?? 0;
}

// ---------------------------------------------------------------------------------------------
// Reading room state from the RoomDO.

/** The slice of a state event we read: what the RoomDO's `getCurrentStateEvent` returns. */
export interface StateEventLike {
  event_id?: string;
  type?: string;
  state_key?: string;
  sender?: string;
  content: JsonObject;
}

/** What this module needs from a room. `roomState(env, config, roomId)` gives the real one (RoomDO RPC);
 *  tests may pass their own. */
export interface RoomStateReader {
  /** Current state event (type, stateKey), or null (also when the room is unknown). */
  get(type: string, stateKey: string): Promise<StateEventLike | null>;
  /** Number of members with membership `join`. */
  joinedMemberCount(): Promise<number>;
}

/** The RoomDO RPC surface we call (durable-objects/room.ts, owned by the rooms work). */
interface RoomDoRpc {
  getCurrentStateEvent(type: string, stateKey: string): Promise<StateEventLike | null | undefined>;
  getJoinedUserIds(): Promise<string[]>;
}

/** The room's current state, read from its RoomDO (addressed in the configured jurisdiction). */
export function roomState(env: Env, config: Config, roomId: string): RoomStateReader {
  const stub = roomStub(env, config, roomId) as unknown as RoomDoRpc;
  return {
    get: async (type, key) => (await stub.getCurrentStateEvent(type, key)) ?? null,
    joinedMemberCount: async () => (await stub.getJoinedUserIds()).length,
  };
}

function asObject(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** A RoomEvent-shaped view of a state event, enough for the pure power-level helpers. */
function asRoomEvent(ev: StateEventLike, roomId: string, type: string, key: string): RoomEvent {
  return {
    event_id: ev.event_id ?? "",
    room_id: roomId,
    sender: ev.sender ?? "",
    type,
    state_key: key,
    content: ev.content,
    origin_server_ts: 0,
    depth: 0,
    prev_events: [],
    auth_events: [],
    pdu: undefined as never,
  };
}

export async function roomExists(reader: RoomStateReader): Promise<boolean> {
  return (await reader.get("m.room.create", "")) !== null;
}

export async function isJoined(reader: RoomStateReader, userId: string): Promise<boolean> {
  return asObject((await reader.get("m.room.member", userId))?.content).membership === "join";
}

export async function isWorldReadable(reader: RoomStateReader): Promise<boolean> {
  return asObject((await reader.get("m.room.history_visibility", ""))?.content).history_visibility === "world_readable";
}

export async function isServerAdmin(env: Env, userId: string): Promise<boolean> {
  const row = await env.DB.prepare("SELECT admin FROM users WHERE user_id = ?").bind(userId).first<{ admin: number }>();
  return !!row?.admin;
}

/**
 * May `userId` change what the directory says about the room (its visibility, and other people's
 * aliases on it)? Our choice, as the spec leaves it to servers ("Servers MAY implement additional
 * access control checks"): a server admin, or a joined member whose power level is at least the
 * level required to send `m.room.canonical_alias` (events[...] or state_default, 50 by default;
 * room v12 creators have infinite power). This is the same rule Synapse applies.
 */
export async function canEditRoomDirectory(env: Env, reader: RoomStateReader, roomId: string, userId: string): Promise<boolean> {
  if (await isServerAdmin(env, userId)) return true;
  const [create, pl, member] = await Promise.all([
    reader.get("m.room.create", ""),
    reader.get("m.room.power_levels", ""),
    reader.get("m.room.member", userId),
  ]);
  if (!create) return false;
  const state: StateMap = new Map();
  state.set(CREATE_KEY, asRoomEvent(create, roomId, "m.room.create", ""));
  if (pl) state.set(POWER_LEVELS_KEY, asRoomEvent(pl, roomId, "m.room.power_levels", ""));
  if (member) state.set(memberKey(userId), asRoomEvent(member, roomId, "m.room.member", userId));
  if (membershipOf(userId, state) !== "join") return false;
  // m.room.create: "room_version ... Defaults to "1" if the key does not exist".
  const rvId = asObject(create.content).room_version;
  const rv = getRoomVersion(typeof rvId === "string" ? rvId : "1");
  if (!rv) return false;
  return powerLevelOf(userId, state, rv) >= requiredPowerLevel("m.room.canonical_alias", true, state, rv);
}

// ---------------------------------------------------------------------------------------------
// Public room summaries (spec: PublishedRoomsChunk; the PublicRoomChunk type is in src/core/types.ts).

/** The plain-text topic: `m.topic`'s text/plain representation (a missing mimetype means
 *  text/plain), else the legacy `topic` string (spec: m.room.topic; PublishedRoomsChunk.topic
 *  "Omitted if no text/plain mimetype exists"). */
function plainTopic(content: Record<string, unknown>): string | undefined {
  // "If the topic property is absent, null, or empty then the topic is unset."
  if (typeof content.topic !== "string" || content.topic === "") return undefined;
  const reprs = asObject(content["m.topic"])["m.text"];
  if (Array.isArray(reprs)) {
    for (const r of reprs) {
      const o = asObject(r);
      if ((o.mimetype === undefined || o.mimetype === "text/plain") && typeof o.body === "string") return o.body;
    }
  }
  return content.topic;
}

/** Build a room's directory entry from its current state, or null if the room is unknown. */
export async function publicRoomChunk(roomId: string, reader: RoomStateReader): Promise<PublicRoomChunk | null> {
  const [create, name, topic, alias, avatar, joinRules, hv, guest, joined] = await Promise.all([
    reader.get("m.room.create", ""),
    reader.get("m.room.name", ""),
    reader.get("m.room.topic", ""),
    reader.get("m.room.canonical_alias", ""),
    reader.get("m.room.avatar", ""),
    reader.get("m.room.join_rules", ""),
    reader.get("m.room.history_visibility", ""),
    reader.get("m.room.guest_access", ""),
    reader.joinedMemberCount(),
  ]);
  if (!create) return null;
  const chunk: PublicRoomChunk = {
    room_id: roomId,
    num_joined_members: joined,
    world_readable: asObject(hv?.content).history_visibility === "world_readable",
    guest_can_join: asObject(guest?.content).guest_access === "can_join",
  };
  const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
  const fields: Partial<PublicRoomChunk> = {
    name: str(asObject(name?.content).name),
    topic: topic ? str(plainTopic(asObject(topic.content))) : undefined,
    canonical_alias: str(asObject(alias?.content).alias),
    avatar_url: str(asObject(avatar?.content).url),
    // join_rule: "When not present, the room is assumed to be public" — so report it whenever known.
    join_rule: str(asObject(joinRules?.content).join_rule) ?? (joinRules ? undefined : "invite"),
    room_type: str(asObject(create.content).type),
  };
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) (chunk as unknown as Record<string, unknown>)[k] = v;
  return chunk;
}

// ---------------------------------------------------------------------------------------------
// Listing with pagination (spec: GET/POST /publicRooms).

/** Position in the listing order (published_ts, room_id). */
export interface ListingKey {
  ts: number;
  roomId: string;
}

/** Where a page starts: the rooms after (`f`) or before (`b`) `key`, `inclusive` of it or not.
 *  Opaque to clients: "The direction of pagination is specified solely by which token is supplied". */
export interface PageToken {
  dir: "f" | "b";
  key: ListingKey;
  inclusive?: boolean;
}

/** Token text: one letter ("f"/"b", upper case when inclusive) + base64url(JSON [ts, room_id]). */
export function encodePageToken(t: PageToken): string {
  const letter = t.inclusive ? t.dir.toUpperCase() : t.dir;
  return letter + encodeBase64Url(new TextEncoder().encode(JSON.stringify([t.key.ts, t.key.roomId])));
}

export function decodePageToken(s: string): PageToken {
  const bad = () => new MatrixError(400, "M_INVALID_PARAM", "Invalid pagination token");
  const letter = s[0];
  if (!letter || !"fFbB".includes(letter)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(decodeBase64(s.slice(1))));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || !Number.isSafeInteger(parsed[0]) || typeof parsed[1] !== "string") throw bad();
  return {
    dir: letter.toLowerCase() as "f" | "b",
    key: { ts: parsed[0] as number, roomId: parsed[1] as string },
    inclusive: letter === letter.toUpperCase(),
  };
}

export interface ListOptions {
  limit: number;
  since?: PageToken;
  /** Case-insensitive substring match over name, topic, canonical alias (and room ID). */
  searchTerm?: string;
  /** Room types to include; `null` stands for rooms without a type. Undefined: all. */
  roomTypes?: (string | null)[];
}

export interface ListResult {
  chunk: PublicRoomChunk[];
  next_batch?: string;
  prev_batch?: string;
}

function matches(chunk: PublicRoomChunk, o: ListOptions): boolean {
  if (o.roomTypes && !o.roomTypes.includes(chunk.room_type ?? null)) return false;
  if (o.searchTerm) {
    const term = o.searchTerm.toLowerCase();
    const hay = [chunk.name, chunk.topic, chunk.canonical_alias, chunk.room_id];
    if (!hay.some((s) => s?.toLowerCase().includes(term))) return false;
  }
  return true;
}

/** Largest page we serve, whatever `limit` asks for; a missing limit means this many. */
export const MAX_PAGE = 100;

/**
 * One page of the published directory. Rooms are listed in a stable order, the order they were
 * published in (published_ts, then room_id), which the spec allows since v1.19 ("The server
 * determines the order ... Continuing to order by largest first or another stable order is
 * recommended"): a keyset order means paging never repeats or skips a room, whatever happens to
 * member counts in between. Rows are read from D1 in batches and summarised from their RoomDOs
 * until `limit` matching rooms (plus one, to know whether there are more) are found. Rooms their
 * RoomDO does not know are left out.
 */
export async function listPublicRooms(
  env: Env,
  o: ListOptions,
  readerFor: (roomId: string) => RoomStateReader,
): Promise<ListResult> {
  const backwards = o.since?.dir === "b";
  const cmp = backwards ? "<" : ">";
  const order = backwards ? "DESC" : "ASC";
  const batch = Math.min(Math.max(o.limit + 1, 20), 200);
  const found: { key: ListingKey; chunk: PublicRoomChunk }[] = [];
  let cursor: ListingKey | undefined = o.since?.key;
  let inclusive = !!o.since?.inclusive;
  while (found.length <= o.limit) {
    const where = cursor ? `AND (published_ts ${cmp} ?1 OR (published_ts = ?1 AND room_id ${cmp}${inclusive ? "=" : ""} ?2))` : "";
    const stmt = env.DB.prepare(
      `SELECT room_id, published_ts FROM room_directory WHERE visibility = 'public' ${where}
       ORDER BY published_ts ${order}, room_id ${order} LIMIT ${batch}`,
    );
    const { results } = await (cursor ? stmt.bind(cursor.ts, cursor.roomId) : stmt).all<{ room_id: string; published_ts: number }>();
    const chunks = await Promise.all(results.map((r) => publicRoomChunk(r.room_id, readerFor(r.room_id)).catch(() => null)));
    results.forEach((r, i) => {
      const chunk = chunks[i];
      if (chunk && matches(chunk, o)) found.push({ key: { ts: r.published_ts, roomId: r.room_id }, chunk });
    });
    if (results.length < batch) break;
    const lastRow = results[results.length - 1];
    cursor = { ts: lastRow.published_ts, roomId: lastRow.room_id };
    inclusive = false;
  }
  const more = found.length > o.limit;
  const page = found.slice(0, o.limit);
  if (backwards) page.reverse();
  const out: ListResult = { chunk: page.map((f) => f.chunk) };
  const first = page[0]?.key;
  const last = page[page.length - 1]?.key;
  if (backwards) {
    // We came from a later page, so there is always one after this: from just past our last
    // room, or (empty page) from the very room the token pointed before.
    out.next_batch = encodePageToken(last ? { dir: "f", key: last } : { dir: "f", key: o.since!.key, inclusive: !o.since!.inclusive });
    if (more && first) out.prev_batch = encodePageToken({ dir: "b", key: first });
  } else {
    if (more && last) out.next_batch = encodePageToken({ dir: "f", key: last });
    // The first page has no prev_batch ("there are no results before this batch, i.e. this is
    // the first batch"); later ones page back from their first room (or from the token's room).
    if (o.since) out.prev_batch = encodePageToken(first ? { dir: "b", key: first } : { dir: "b", key: o.since.key, inclusive: !o.since.inclusive });
  }
  return out;
}

/** A /publicRooms request for our own directory, as clients and other servers send it. */
export interface LocalListRequest {
  limit?: number;
  /** A page token of ours; an empty string is the first page. */
  since?: string;
  filter?: { generic_search_term?: string; room_types?: (string | null)[] };
}

/** Our directory's answer to /publicRooms (client GET/POST and federation GET/POST alike). A
 *  missing or zero limit means "no limit"; we still page, at MAX_PAGE rooms. A blank search term
 *  and an empty room_types list are treated like absent ones (as Synapse does).
 *  total_room_count_estimate: "An estimate on the total number of published rooms, if the server
 *  has an estimate" — we know it exactly when unfiltered; with a filter we give none. */
export async function localPublicRooms(env: Env, config: Config, req: LocalListRequest): Promise<ListResult & { total_room_count_estimate?: number }> {
  const searchTerm = req.filter?.generic_search_term?.trim() || undefined;
  const roomTypes = req.filter?.room_types?.length ? req.filter.room_types : undefined;
  const opts: ListOptions = {
    limit: req.limit === undefined || req.limit === 0 ? MAX_PAGE : Math.min(req.limit, MAX_PAGE),
    since: req.since ? decodePageToken(req.since) : undefined,
    searchTerm,
    roomTypes,
  };
  const filtered = searchTerm !== undefined || roomTypes !== undefined;
  const [page, total] = await Promise.all([listPublicRooms(env, opts, (id) => roomState(env, config, id)), filtered ? undefined : countPublicRooms(env)]);
  return total === undefined ? page : { ...page, total_room_count_estimate: total };
}

// ---------------------------------------------------------------------------------------------
// Other servers' directories (spec: GET/POST /publicRooms `server`; Server-Server API
// "Public Room Directory", GET/POST /_matrix/federation/v1/publicRooms).

export interface RemoteListRequest {
  limit?: number;
  since?: string;
  filter?: { generic_search_term?: string; room_types?: (string | null)[] };
  include_all_networks?: boolean;
  third_party_instance_id?: string;
}

/** Ask `server` for a page of its directory: GET when there is no filter, POST otherwise. The
 *  answer is checked for shape (entries without a valid room_id are dropped). A 4xx from the peer
 *  is passed on with its status and errcode; an unreachable peer is 502 M_UNKNOWN. */
export async function fetchRemotePublicRooms(
  ctx: FederationContext,
  server: string,
  req: RemoteListRequest,
): Promise<{ chunk: JsonObject[]; next_batch?: string; prev_batch?: string; total_room_count_estimate?: number }> {
  const path = "/_matrix/federation/v1/publicRooms";
  let body: unknown;
  try {
    body = req.filter
      ? (await federationRequest(ctx, server, "POST", path, { body: req, timeoutMs: 20_000 })).body
      : (
          await federationRequest(ctx, server, "GET", path, {
            query: { limit: req.limit, since: req.since, include_all_networks: req.include_all_networks, third_party_instance_id: req.third_party_instance_id },
            timeoutMs: 20_000,
          })
        ).body;
  } catch (e) {
    if (e instanceof FederationError && e.status !== undefined && e.status >= 400 && e.status < 500) {
      throw new MatrixError(e.status as 400, e.errcode ?? "M_UNKNOWN", `${server}: ${e.message}`);
    }
    throw new MatrixError(502, "M_UNKNOWN", `Could not fetch the room directory of ${server}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const o = asObject(body);
  if (!Array.isArray(o.chunk)) throw new MatrixError(502, "M_UNKNOWN", `${server} answered without a chunk list`);
  const out: { chunk: JsonObject[]; next_batch?: string; prev_batch?: string; total_room_count_estimate?: number } = {
    chunk: o.chunk.filter((e): e is JsonObject => typeof asObject(e).room_id === "string" && isValidRoomId(asObject(e).room_id as string)),
  };
  if (typeof o.next_batch === "string" && o.next_batch !== "") out.next_batch = o.next_batch;
  if (typeof o.prev_batch === "string" && o.prev_batch !== "") out.prev_batch = o.prev_batch;
  if (typeof o.total_room_count_estimate === "number" && Number.isSafeInteger(o.total_room_count_estimate)) out.total_room_count_estimate = o.total_room_count_estimate;
  return out;
}
