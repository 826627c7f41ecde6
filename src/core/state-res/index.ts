// State resolution v2 and v2.1 (spec: room versions 2–11 "State resolution", v12 "State resolution").
// OWNER: state-res helper.
import type { RoomEvent, StateIdMap } from "../types";
import type { RoomVersion } from "../room-versions";
/** Resolve several state sets (type/state_key → event ID) into one. `getEvent` must return every
 *  event referenced by the state sets and their auth chains (synchronously: RoomDO SQLite is sync). */
export function resolveState(rv: RoomVersion, stateSets: StateIdMap[], getEvent: (eventId: string) => RoomEvent | undefined): StateIdMap { throw new Error("not implemented"); }
