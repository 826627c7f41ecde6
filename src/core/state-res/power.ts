// Power levels as state resolution needs them: "x's sender has greater power level than y's
// sender, when looking at their respective auth_events".
// The power level itself comes from the auth rules' `powerLevelOf` (v12: creators are infinite;
// no power levels event: the creator has 100 before v12, everyone else 0).
import { stateKey, type RoomEvent, type StateMap } from "../types";
import type { EventGraph } from "./graph";

export { powerLevelOf } from "../auth-rules";

const CREATE = stateKey("m.room.create", "");

/**
 * The state an event's own `auth_events` describe, keyed by (type, state_key), with the create
 * event added from the room ID in v12 (where it is implied rather than listed).
 * `isRejected` auth events are left out ("… used if the auth event is not rejected").
 */
export function authEventsState(
  graph: EventGraph,
  ev: RoomEvent,
  isRejected?: (eventId: string) => boolean,
): StateMap {
  const state: StateMap = new Map();
  for (const a of graph.authEvents(ev)) {
    if (a.state_key === undefined) continue;
    if (isRejected && isRejected(a.event_id)) continue;
    state.set(stateKey(a.type, a.state_key), a);
  }
  if (graph.rv.roomIdFromCreate && !state.has(CREATE)) {
    const create = graph.createEvent(ev);
    if (create) state.set(CREATE, create);
  }
  return state;
}
