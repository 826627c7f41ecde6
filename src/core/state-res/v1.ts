// State resolution for room version 1 (spec: rooms/v1.md, "State resolution"). The spec warns
// that this algorithm can reset state; room version 2 replaced it. It is here so that rooms of
// version 1 (created here or joined over federation) resolve forks as every other server does.
//
// "The resolved state is built up in a number of passes; here we use R to refer to the results
// of the resolution so far.
//  - Start by setting R to the union of the states to be resolved, excluding any conflicting
//    events.
//  - First we resolve conflicts between m.room.power_levels events. [...] Sort the list by
//    ascending depth then descending sha1(event_id). Add the first event in the list to R. For
//    each subsequent event in the list, check that the event would be allowed by the
//    authorisation rules for a room in state R. If the event would be allowed, then update R with
//    the event and continue with the next event in the list. If it would not be allowed, stop
//  - Repeat the above process for conflicts between m.room.join_rules events.
//  - Repeat the above process for conflicts between m.room.member events.
//  - [...] for all other conflicts, just pick the event with the highest depth and lowest
//    sha1(event_id) that passes authentication in R and add it to R."
// "A conflict occurs between states where those states have different event_ids for the same
// (event_type, state_key)": a key that only some of the states hold is not conflicted.
import { splitStateKey, type RoomEvent, type StateIdMap, type StateKey, type StateMap } from "../types";
import type { RoomVersion } from "../room-versions";
import { CREATE_KEY, authEventKeys, checkEventAuth } from "../auth-rules";
import { sha1Hex } from "../sha1";

const AUTH_TYPES = ["m.room.power_levels", "m.room.join_rules", "m.room.member"];

export function resolveV1(rv: RoomVersion, stateSets: StateIdMap[], getEvent: (eventId: string) => RoomEvent | undefined): StateIdMap {
  const resolved: StateIdMap = new Map();
  const conflicts = new Map<StateKey, RoomEvent[]>();
  const keys = new Set<StateKey>();
  for (const s of stateSets) for (const k of s.keys()) keys.add(k);
  for (const k of [...keys].sort()) {
    const ids = new Set<string>();
    for (const s of stateSets) {
      const id = s.get(k);
      if (id !== undefined) ids.add(id);
    }
    if (ids.size === 1) resolved.set(k, [...ids][0]!);
    else conflicts.set(k, [...ids].map(getEvent).filter((e): e is RoomEvent => e !== undefined)); // unknown events are ignored
  }
  if (conflicts.size === 0) return resolved;

  const r: StateMap = new Map();
  for (const [k, id] of resolved) {
    const e = getEvent(id);
    if (e) r.set(k, e);
  }
  const put = (k: StateKey, e: RoomEvent) => {
    r.set(k, e);
    resolved.set(k, e.event_id);
  };
  // "allowed by the authorisation rules for a room in state R": R's events for the keys the
  // rules read for this event.
  const allowed = (e: RoomEvent): boolean => {
    const auth: StateMap = new Map();
    for (const k of [CREATE_KEY, ...authEventKeys(rv, e)]) {
      const a = r.get(k);
      if (a) auth.set(k, a);
    }
    return checkEventAuth(e, auth, rv).allowed;
  };
  const sha1s = new Map<string, string>();
  const sha1 = (e: RoomEvent): string => {
    const known = sha1s.get(e.event_id);
    if (known !== undefined) return known;
    const h = sha1Hex(e.event_id);
    sha1s.set(e.event_id, h);
    return h;
  };
  const typeOf = (k: StateKey) => splitStateKey(k)[0];

  for (const type of AUTH_TYPES) {
    for (const [k, events] of conflicts) {
      if (typeOf(k) !== type || events.length === 0) continue;
      // Ascending depth, then descending sha1(event_id).
      const list = [...events].sort((a, b) => a.depth - b.depth || (sha1(a) < sha1(b) ? 1 : sha1(a) > sha1(b) ? -1 : 0));
      put(k, list[0]!);
      for (const e of list.slice(1)) {
        if (!allowed(e)) break;
        put(k, e);
      }
    }
  }
  for (const [k, events] of conflicts) {
    if (AUTH_TYPES.includes(typeOf(k)) || events.length === 0) continue;
    // Highest depth, then lowest sha1(event_id), that passes. The spec does not say what happens
    // when none passes; like Synapse, the last of that order (lowest depth) is taken then.
    const list = [...events].sort((a, b) => b.depth - a.depth || (sha1(a) < sha1(b) ? -1 : sha1(a) > sha1(b) ? 1 : 0));
    put(k, list.find(allowed) ?? list[list.length - 1]!);
  }
  return resolved;
}
