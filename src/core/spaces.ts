// Spaces (spec: Client-Server API "Spaces"): which m.space.child events count, their order, and
// the shape of room summaries exchanged over federation. Pure code, no I/O.
import { isValidRoomId } from "./ids";
import type { JsonObject, PublicRoomChunk } from "./types";

/** A child as the hierarchy APIs show it: a stripped state event plus origin_server_ts
 *  (spec: SpaceHierarchyRoomsChunk.children_state / StrippedChildStateEvent). */
export interface StrippedChild {
  type: "m.space.child";
  state_key: string;
  content: JsonObject;
  sender: string;
  origin_server_ts: number;
}

const asObject = (v: unknown): JsonObject => (v && typeof v === "object" && !Array.isArray(v) ? (v as JsonObject) : {});

/** m.space.child `via`: "Servers to try to join through ... A child room without a via key is
 *  not a child" — and an empty or malformed list is treated the same (as Synapse does). */
export function childVia(content: unknown): string[] | undefined {
  const via = asObject(content).via;
  if (!Array.isArray(via) || via.length === 0 || !via.every((s) => typeof s === "string" && s !== "")) return undefined;
  return via as string[];
}

/** m.space.child `order`: "strings ... consisting of ASCII characters within the range \x20
 *  (space) and \x7E (~), inclusive ... MUST NOT be longer than 50 characters". */
export function validOrder(order: unknown): string | undefined {
  return typeof order === "string" && order.length <= 50 && /^[\x20-\x7e]*$/.test(order) ? order : undefined;
}

/** The valid children among m.space.child state events (valid room ID state key, valid via),
 *  optionally only the suggested ones, in the spec's order ("Ordering of children within a
 *  space"): valid `order` first, lexicographically by code point; then by origin_server_ts; ties
 *  by room ID. */
export function spaceChildren(events: readonly JsonObject[], suggestedOnly: boolean): StrippedChild[] {
  const out: StrippedChild[] = [];
  for (const e of events) {
    if (e.type !== "m.space.child" || typeof e.state_key !== "string" || !isValidRoomId(e.state_key)) continue;
    const content = asObject(e.content);
    if (!childVia(content)) continue;
    if (suggestedOnly && content.suggested !== true) continue;
    out.push({
      type: "m.space.child",
      state_key: e.state_key,
      content,
      sender: typeof e.sender === "string" ? e.sender : "",
      origin_server_ts: typeof e.origin_server_ts === "number" ? e.origin_server_ts : 0,
    });
  }
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return out.sort((a, b) => {
    const oa = validOrder(a.content.order);
    const ob = validOrder(b.content.order);
    if (oa !== undefined && ob === undefined) return -1;
    if (oa === undefined && ob !== undefined) return 1;
    if (oa !== undefined && ob !== undefined && oa !== ob) return cmp(oa, ob);
    if (a.origin_server_ts !== b.origin_server_ts) return a.origin_server_ts - b.origin_server_ts;
    return cmp(a.state_key, b.state_key);
  });
}

/** A room summary (spec: RoomSummary + children_state) as we send it and as we accept it from
 *  another server. */
export interface SpaceRoomSummary extends PublicRoomChunk {
  allowed_room_ids?: string[];
  encryption?: string;
  room_version?: string;
  children_state: StrippedChild[];
}

/** Keep only the summary fields the spec defines, with their types, from another server's answer
 *  (nothing else reaches our clients). Undefined when there is no valid room_id. */
export function sanitizeSummary(raw: unknown): SpaceRoomSummary | undefined {
  const o = asObject(raw);
  if (typeof o.room_id !== "string" || !isValidRoomId(o.room_id)) return undefined;
  const out: SpaceRoomSummary = {
    room_id: o.room_id,
    num_joined_members: Number.isSafeInteger(o.num_joined_members) && (o.num_joined_members as number) >= 0 ? (o.num_joined_members as number) : 0,
    world_readable: o.world_readable === true,
    guest_can_join: o.guest_can_join === true,
    children_state: [],
  };
  for (const k of ["name", "topic", "canonical_alias", "avatar_url", "join_rule", "room_type", "encryption", "room_version"] as const) {
    const v = o[k];
    if (typeof v === "string" && v.length <= 4096) out[k] = v;
  }
  if (Array.isArray(o.allowed_room_ids)) out.allowed_room_ids = o.allowed_room_ids.filter((r): r is string => typeof r === "string" && isValidRoomId(r));
  if (Array.isArray(o.children_state)) {
    out.children_state = spaceChildren(
      o.children_state.filter((e): e is JsonObject => !!e && typeof e === "object").map((e) => ({ ...e, type: e.type })),
      false,
    ).slice(0, 1000);
  }
  return out;
}

/** Pagination token of GET /hierarchy: where the walk of `root` stopped, with the parameters it
 *  was started with (spec: `from` — "max_depth and suggested_only cannot be changed"). */
export interface HierarchyToken {
  root: string;
  suggestedOnly: boolean;
  maxDepth: number;
  offset: number;
}

export function encodeHierarchyToken(t: HierarchyToken): string {
  const json = JSON.stringify([t.root, t.suggestedOnly ? 1 : 0, t.maxDepth, t.offset]);
  return btoa(String.fromCharCode(...new TextEncoder().encode(json)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

export function decodeHierarchyToken(s: string): HierarchyToken | undefined {
  try {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const v = JSON.parse(new TextDecoder().decode(bytes)) as unknown;
    if (!Array.isArray(v) || v.length !== 4) return undefined;
    const [root, s1, depth, offset] = v;
    if (typeof root !== "string" || (s1 !== 0 && s1 !== 1) || !Number.isSafeInteger(depth) || depth < 0 || !Number.isSafeInteger(offset) || offset < 0) return undefined;
    return { root, suggestedOnly: s1 === 1, maxDepth: depth, offset };
  } catch {
    return undefined;
  }
}
