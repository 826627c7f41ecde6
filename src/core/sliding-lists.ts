// Simplified Sliding Sync (MSC4186): the pure parts — list filters, recency order, windows and
// `required_state` matching. No I/O: the Worker (src/api/client/sliding-sync.ts) feeds in the
// rooms the hub knows and gets back what each list shows.

/** Event types that move a room up the recency order (MSC4186 "bump_stamp": the default bump
 *  event types; Synapse and Tuwunel use the same set). My own membership changes bump too, so
 *  an invite or a fresh join shows at the top. */
export const BUMP_EVENT_TYPES = new Set([
  "m.room.create",
  "m.room.message",
  "m.room.encrypted",
  "m.sticker",
  "m.call.invite",
  "m.poll.start",
  "m.beacon_info",
]);

export type SlidingMembership = "join" | "invite" | "leave" | "ban" | "knock";

/** One room as the list machinery sees it. */
export interface ListRoom {
  roomId: string;
  membership: SlidingMembership;
  /** Recency: higher is more recent (hub position of the last bump event). */
  bump: number;
  isDm: boolean;
  /** undefined: not known (only read when a filter needs it). */
  encrypted?: boolean;
  /** m.room.create content.type (null: no type); undefined: not known. */
  roomType?: string | null;
}

export interface ListFilters {
  is_dm?: boolean;
  is_encrypted?: boolean;
  is_invite?: boolean;
  room_types?: (string | null)[];
  not_room_types?: (string | null)[];
  spaces?: string[];
}

export type Range = [number, number];

/** Whether a room passes a list's filters. `inSpaces`: rooms that are children of the filter's
 *  spaces (computed by the caller when `spaces` is set). */
export function passesFilters(r: ListRoom, f: ListFilters | undefined, inSpaces?: Set<string>): boolean {
  if (!f) return true;
  if (f.is_dm !== undefined && r.isDm !== f.is_dm) return false;
  if (f.is_invite !== undefined && (r.membership === "invite") !== f.is_invite) return false;
  if (f.is_encrypted !== undefined && !!r.encrypted !== f.is_encrypted) return false;
  // room_types: "null" in the list means rooms without a type (MSC4186 filters).
  const type = r.roomType ?? null;
  if (f.room_types !== undefined && !f.room_types.includes(type)) return false;
  if (f.not_room_types !== undefined && f.not_room_types.includes(type)) return false;
  if (f.spaces !== undefined && !(inSpaces?.has(r.roomId) ?? false)) return false;
  return true;
}

/** Most recent first; ties by room ID so the order is total and stable across requests. */
export function sortByRecency(rooms: ListRoom[]): ListRoom[] {
  return [...rooms].sort((a, b) => b.bump - a.bump || (a.roomId < b.roomId ? -1 : a.roomId > b.roomId ? 1 : 0));
}

/** Rooms of a sorted list inside the given ranges (inclusive, clamped to the list). */
export function windowOf(sorted: ListRoom[], ranges: Range[]): ListRoom[] {
  const seen = new Set<number>();
  const out: ListRoom[] = [];
  for (const [a, b] of ranges) {
    for (let i = a; i <= Math.min(b, sorted.length - 1); i++) {
      if (seen.has(i)) continue;
      seen.add(i);
      out.push(sorted[i]);
    }
  }
  return out;
}

/** A list's view: how many rooms match and which are in its window. */
export function computeList(rooms: ListRoom[], filters: ListFilters | undefined, ranges: Range[], inSpaces?: Set<string>): { count: number; window: ListRoom[] } {
  const sorted = sortByRecency(rooms.filter((r) => passesFilters(r, filters, inSpaces)));
  return { count: sorted.length, window: windowOf(sorted, ranges) };
}

/** Whether a list's filters need facts the hub does not keep (the RoomDO must be asked). */
export function needsRoomType(f: ListFilters | undefined): boolean {
  return !!f && (f.room_types !== undefined || f.not_room_types !== undefined);
}

// ---------------------------------------------------------------------------------------------
// required_state (MSC4186): [type, state_key] pairs. `*` as state_key: every key of the type;
// `*` as type: every type with that key ([*, *]: all state). State keys `$ME` (my user ID) and,
// for m.room.member, `$LAZY` (members of the timeline's senders).

export type RequiredState = [string, string][];

export interface RequiredStatePlan {
  /** All state of every type ([*, *], or [*, key]). */
  allTypes: boolean;
  /** Types asked for (with any key), for narrowing what the RoomDO loads. */
  types: Set<string>;
  /** $LAZY on m.room.member. */
  lazyMembers: boolean;
  /** Member keys beyond $ME / $LAZY (or every member): lazy loading cannot be used. */
  explicitMembers: boolean;
}

export function planRequiredState(rs: RequiredState, userId: string): RequiredStatePlan {
  const plan: RequiredStatePlan = { allTypes: false, types: new Set(), lazyMembers: false, explicitMembers: false };
  for (const [type, key] of rs) {
    if (type === "*") plan.allTypes = true;
    else plan.types.add(type);
    if (type === "m.room.member" || type === "*") {
      if (key === "$LAZY") plan.lazyMembers = true;
      else if (key !== "$ME" && key !== userId) plan.explicitMembers = true;
    }
  }
  return plan;
}

/** Whether one state event is asked for. `lazySenders`: senders of the timeline being sent. */
export function wantsState(rs: RequiredState, userId: string, ev: { type: string; state_key?: string }, lazySenders: Set<string>): boolean {
  const key = ev.state_key ?? "";
  for (const [t, k] of rs) {
    if (t !== "*" && t !== ev.type) continue;
    if (k === "*" || k === key) return true;
    if (k === "$ME" && key === userId) return true;
    if (k === "$LAZY" && ev.type === "m.room.member" && lazySenders.has(key)) return true;
  }
  return false;
}

/** Merge the required_state of several lists / subscriptions that show the same room. */
export function mergeRequiredState(all: RequiredState[]): RequiredState {
  const seen = new Set<string>();
  const out: RequiredState = [];
  for (const rs of all) {
    for (const [t, k] of rs) {
      const id = `${t}\u0000${k}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push([t, k]);
    }
  }
  return out;
}

/** A stable key of a room's config, to see when the client asks for more state than was sent. */
export function configKey(rs: RequiredState): string {
  return JSON.stringify([...rs].map(([t, k]) => `${t}\u0000${k}`).sort());
}

/** Whether two room configs ask for the same (a changed room subscription is answered at once). */
export function sameConfig(a: { required_state: RequiredState; timeline_limit: number }, b: { required_state: RequiredState; timeline_limit: number }): boolean {
  return a.timeline_limit === b.timeline_limit && configKey(a.required_state) === configKey(b.required_state);
}
