// State resolution v2 and v2.1 (spec: room versions 2–11 "State resolution", v12 "State resolution").
// OWNER: state-res helper.
//
// Layout:
//   graph.ts      memoised view of the auth DAG (getEvent cache, auth chain walks, v12 implied create)
//   conflicts.ts  unconflicted/conflicted split, auth difference, conflicted state subgraph (v2.1)
//   ordering.ts   power events, reverse topological power ordering, mainline ordering
//   power.ts      sender power level from an event's auth events
//   iterative.ts  iterative auth checks
//   v2.ts         the five steps of the algorithm
//   v1.ts         room version 1's algorithm (passes over power levels, join rules, members, rest)
import type { RoomEvent, StateIdMap } from "../types";
import type { RoomVersion } from "../room-versions";
import { EventGraph } from "./graph";
import { resolveV2, type ResolveOptions } from "./v2";
import { resolveV1 } from "./v1";

export type { ResolveOptions } from "./v2";
export type { Split } from "./conflicts";
export { createEventIdForRoom } from "./graph";

/** Resolve several state sets (type/state_key → event ID) into one. `getEvent` must return every
 *  event referenced by the state sets and their auth chains (synchronously: RoomDO SQLite is sync).
 *
 *  Room version 12: the create event is not in anyone's `auth_events`; `getEvent` must also
 *  return it under `$` + the room ID without its `!` (room ID = `!` + create event hash).
 *
 *  Events `getEvent` cannot return are ignored. `opts.isRejected` marks events that must not be
 *  used as auth events in the iterative auth checks. Pure: no I/O beyond `getEvent`. */
export function resolveState(
  rv: RoomVersion,
  stateSets: StateIdMap[],
  getEvent: (eventId: string) => RoomEvent | undefined,
  opts?: ResolveOptions,
): StateIdMap {
  if (stateSets.length === 0) return new Map();
  if (stateSets.length === 1) return new Map(stateSets[0]);
  if (rv.stateRes === "v1") return resolveV1(rv, stateSets, getEvent);
  // The caller's rejection lookup may hit storage: ask once per event within this call.
  let isRejected = opts?.isRejected;
  if (isRejected) {
    const ask = isRejected;
    const seen = new Map<string, boolean>();
    isRejected = (id) => {
      let r = seen.get(id);
      if (r === undefined) seen.set(id, (r = ask(id)));
      return r;
    };
  }
  return resolveV2(new EventGraph(rv, getEvent, opts?.authEvents), stateSets, { ...opts, isRejected });
}
