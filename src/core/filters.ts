// Filters (spec: Client-Server API "Filtering"; OpenAPI definitions/sync_filter.yaml,
// event_filter.yaml, room_event_filter.yaml), pure. /sync applies them section by section;
// /messages and /context apply the RoomEventFilter part (matchesRoomEventFilter, shared with
// src/core/room-event-filter.ts).
import { z } from "zod";
import type { JsonObject, JsonValue } from "./types";
import { roomEventFilterSchema, matchesRoomEventFilter, typeMatches, type RoomEventFilter } from "./room-event-filter";
import { splitPath } from "./push-rules";

export { matchesRoomEventFilter, type RoomEventFilter };

const strings = z.array(z.string().max(255)).max(1000);

/** EventFilter: limit, types/not_types, senders/not_senders. "limit ... must be an integer
 *  greater than 0" (we treat 0 as "none", as Synapse does for account_data: []). */
export const eventFilterSchema = z
  .object({
    limit: z.number().int().min(0).optional(),
    types: strings.optional(),
    not_types: strings.optional(),
    senders: strings.optional(),
    not_senders: strings.optional(),
  })
  .loose();
export type EventFilter = z.infer<typeof eventFilterSchema>;

const roomEventFilter = roomEventFilterSchema.extend({ limit: z.number().int().min(0).optional() });

export const roomFilterSchema = z
  .object({
    rooms: strings.optional(),
    not_rooms: strings.optional(),
    include_leave: z.boolean().optional(),
    timeline: roomEventFilter.optional(),
    state: roomEventFilter.optional(),
    ephemeral: roomEventFilter.optional(),
    account_data: roomEventFilter.optional(),
  })
  .loose();
export type RoomFilter = z.infer<typeof roomFilterSchema>;

export const filterSchema = z
  .object({
    event_fields: strings.optional(),
    event_format: z.enum(["client", "federation"]).optional(),
    presence: eventFilterSchema.optional(),
    account_data: eventFilterSchema.optional(),
    room: roomFilterSchema.optional(),
  })
  .loose();
export type Filter = z.infer<typeof filterSchema>;

export const DEFAULT_TIMELINE_LIMIT = 10;
export const MAX_TIMELINE_LIMIT = 1000;

/** Parse a filter definition; returns a readable error instead of throwing. */
export function parseFilter(raw: unknown): { ok: true; filter: Filter } | { ok: false; error: string } {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return { ok: false, error: "Filter must be a JSON object" };
  const r = filterSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    return { ok: false, error: `${i.path.join(".") || "filter"}: ${i.message}` };
  }
  return { ok: true, filter: r.data };
}

/** EventFilter for non-room events (presence, global account data): `sender` is absent on
 *  account data events, so sender lists only apply when the event has one. */
export function matchesEventFilter(f: EventFilter | undefined, ev: { type: string; sender?: string }): boolean {
  if (!f) return true;
  if (f.not_types?.some((p) => typeMatches(p, ev.type))) return false;
  if (f.types && !f.types.some((p) => typeMatches(p, ev.type))) return false;
  if (ev.sender !== undefined) {
    if (f.not_senders?.includes(ev.sender)) return false;
    if (f.senders && !f.senders.includes(ev.sender)) return false;
  }
  return true;
}

/** Apply an EventFilter to a list: matching events, at most `limit` (the newest when the list is
 *  in stream order). */
export function filterEvents<E extends { type: string; sender?: string }>(f: EventFilter | undefined, events: E[]): E[] {
  const out = events.filter((e) => matchesEventFilter(f, e));
  if (f?.limit !== undefined && out.length > f.limit) return out.slice(out.length - f.limit);
  return out;
}

/** RoomFilter rooms / not_rooms: "not_rooms ... takes precedence over rooms". */
export function roomIncluded(f: RoomFilter | undefined, roomId: string): boolean {
  if (!f) return true;
  if (f.not_rooms?.includes(roomId)) return false;
  if (f.rooms && !f.rooms.includes(roomId)) return false;
  return true;
}

/** A room-section filter (ephemeral, room account_data): room lists come from both the RoomFilter
 *  and the RoomEventFilter. */
export function roomSectionFilter(f: RoomEventFilter | undefined, roomId: string, events: JsonObject[]): JsonObject[] {
  if (!f) return events;
  if (f.not_rooms?.includes(roomId) || (f.rooms && !f.rooms.includes(roomId))) return [];
  const out = events.filter((e) => matchesRoomEventFilter({ ...f, rooms: undefined, not_rooms: undefined }, { type: String(e.type), sender: String(e.sender ?? "") }));
  if (f.limit !== undefined && out.length > f.limit) return out.slice(out.length - f.limit);
  return out;
}

/** The timeline limit: the filter's, else the default, clamped. */
export function timelineLimit(f: Filter | undefined): number {
  const l = f?.room?.timeline?.limit;
  if (l === undefined) return DEFAULT_TIMELINE_LIMIT;
  return Math.max(0, Math.min(l, MAX_TIMELINE_LIMIT));
}

/** `event_fields`: keep only the listed dot-separated paths ("A server may include more fields
 *  than were requested"). */
export function applyEventFields(ev: JsonObject, fields: string[] | undefined): JsonObject {
  if (!fields) return ev;
  const out: JsonObject = {};
  for (const field of fields) {
    const path = splitPath(field);
    let src: JsonValue | undefined = ev;
    for (const p of path) {
      if (src === null || typeof src !== "object" || Array.isArray(src)) {
        src = undefined;
        break;
      }
      src = (src as JsonObject)[p];
    }
    if (src === undefined) continue;
    let dst = out;
    for (let i = 0; i < path.length - 1; i++) {
      const next = dst[path[i]];
      if (next === undefined || next === null || typeof next !== "object" || Array.isArray(next)) dst[path[i]] = {};
      dst = dst[path[i]] as JsonObject;
    }
    dst[path[path.length - 1]] = src;
  }
  return out;
}

/** The parts of a filter the RoomDO applies when it builds a room's sync view. */
export interface RoomSyncFilter {
  timeline?: RoomEventFilter;
  state?: RoomEventFilter;
  lazyLoadMembers: boolean;
  includeRedundantMembers: boolean;
}

export function roomSyncFilter(f: Filter | undefined): RoomSyncFilter {
  const state = f?.room?.state;
  return {
    timeline: f?.room?.timeline,
    state,
    lazyLoadMembers: !!state?.lazy_load_members,
    includeRedundantMembers: !!state?.include_redundant_members,
  };
}

/** Whether an event passes the state filter (types/senders; lazy-loading is the RoomDO's). */
export function matchesStateFilter(f: RoomEventFilter | undefined, ev: { type: string; sender: string }): boolean {
  if (!f) return true;
  return matchesRoomEventFilter({ ...f, rooms: undefined, not_rooms: undefined, contains_url: undefined }, ev);
}

/** m.ignored_user_list content → the set of ignored user IDs (module "Ignoring Users"). */
export function ignoredUsers(content: JsonObject | undefined): Set<string> {
  const list = content?.ignored_users;
  if (!list || typeof list !== "object" || Array.isArray(list)) return new Set();
  return new Set(Object.keys(list));
}

/** Module "Ignoring Users": "the client will no longer receive events sent by that user" also
 *  covers what they send as ephemeral events: their typing notices and read receipts are left
 *  out of a room's `ephemeral` (a typing or receipt event left with nobody in it is dropped, so
 *  an ignored user's receipt alone does not wake a long-poll). Pure. */
export function ephemeralWithoutIgnored(events: JsonObject[], ignored: ReadonlySet<string>): JsonObject[] {
  if (ignored.size === 0) return events;
  const out: JsonObject[] = [];
  for (const ev of events) {
    const content = ev.content as JsonObject | undefined;
    if (ev.type === "m.typing" && content && Array.isArray(content.user_ids)) {
      const ids = content.user_ids.filter((u) => typeof u !== "string" || !ignored.has(u));
      if (ids.length < content.user_ids.length && ids.length === 0) continue;
      out.push({ ...ev, content: { ...content, user_ids: ids } });
    } else if (ev.type === "m.receipt" && content) {
      const kept: JsonObject = {};
      for (const [eventId, byType] of Object.entries(content)) {
        const types: JsonObject = {};
        for (const [rtype, byUser] of Object.entries((byType ?? {}) as JsonObject)) {
          const users = Object.fromEntries(Object.entries((byUser ?? {}) as JsonObject).filter(([u]) => !ignored.has(u)));
          if (Object.keys(users).length) types[rtype] = users;
        }
        if (Object.keys(types).length) kept[eventId] = types;
      }
      if (Object.keys(kept).length) out.push({ ...ev, content: kept });
    } else {
      out.push(ev);
    }
  }
  return out;
}
