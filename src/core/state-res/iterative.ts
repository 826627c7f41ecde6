// Iterative auth checks (spec, state resolution v2, "Iterative auth checks").
import { stateKey, type RoomEvent, type StateMap } from "../types";
import { authEventKeys, checkEventAuth } from "../auth-rules";
import type { EventGraph } from "./graph";
import { authEventsState } from "./power";

const CREATE = stateKey("m.room.create", "");

/**
 * "The iterative auth checks algorithm takes as input an initial room state and a sorted list of
 * state events, and constructs a new room state by iterating through the event list and applying
 * the state event to the room state if the state event is allowed by the authorisation rules.
 * If the state event is not allowed by the authorisation rules, then the event is ignored. If a
 * (event_type, state_key) key that is required for checking the authorisation rules is not
 * present in the state, then the appropriate state event from the event's auth_events is used if
 * the auth event is not rejected."
 *
 * So the state each event is checked against is: its own (non-rejected) auth events, overlaid
 * with the partially resolved state for every key the auth rules need for this event. The create
 * event is always needed; in v12 it is not in auth_events and comes from the room ID.
 * Like Synapse, a rejected event in the partially resolved state is not used for the overlay
 * either (the event's own auth event for that key then stands).
 *
 * `state` is updated in place and returned.
 */
export function iterativeAuthChecks(
  graph: EventGraph,
  state: StateMap,
  events: RoomEvent[],
  isRejected?: (eventId: string) => boolean,
): StateMap {
  const rv = graph.rv;
  for (const ev of events) {
    if (ev.state_key === undefined) continue;
    const authState = authEventsState(graph, ev, isRejected);
    const needed = authEventKeys(rv, ev);
    for (const k of [CREATE, ...needed]) {
      const current = state.get(k);
      if (current && !(isRejected && isRejected(current.event_id))) authState.set(k, current);
    }
    if (checkEventAuth(ev, authState, rv).allowed) state.set(stateKey(ev.type, ev.state_key), ev);
  }
  return state;
}
