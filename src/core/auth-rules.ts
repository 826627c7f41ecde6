// Authorization rules for every room version (spec: room version pages, "Authorization rules").
// OWNER: auth-rules helper.
import type { RoomEvent, StateMap, StateKey } from "./types";
import type { RoomVersion } from "./room-versions";
export type AuthResult = { allowed: true } | { allowed: false; reason: string };
/** The (type, state_key) pairs an event of this shape needs in its auth_events
 *  ("Auth events selection"). For v12 the create event is not included. */
export function authEventKeys(rv: RoomVersion, ev: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): StateKey[] { throw new Error("not implemented"); }
/** Check the event against `authState` (either the state built from its auth_events, or the
 *  state before it). `authState` includes the create event even in v12. */
export function checkEventAuth(event: RoomEvent, authState: StateMap, rv: RoomVersion): AuthResult { throw new Error("not implemented"); }
