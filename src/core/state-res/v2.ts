// State resolution v2 (room versions 2–11) and v2.1 (room version 12).
import { stateKey, type RoomEvent, type StateIdMap, type StateMap } from "../types";
import type { EventGraph } from "./graph";
import { authDifference, conflictedStateSubgraph, splitConflicted, type Split } from "./conflicts";
import { isPowerEvent, mainlineOrdering, reverseTopologicalPowerOrdering } from "./ordering";
import { iterativeAuthChecks } from "./iterative";

const POWER_LEVELS = stateKey("m.room.power_levels", "");

export interface ResolveOptions {
  /** Events rejected (e.g. against the state before them). Such events are still resolved as
   *  usual when they appear in the conflicted sets ("handled as usual by the algorithm"), but
   *  are never used as auth events in the iterative auth checks. */
  isRejected?: (eventId: string) => boolean;
  /** An event's auth event IDs, or undefined when `getEvent` would not return the event: a
   *  cheaper lookup the auth-chain walks use instead of `getEvent` (they visit every event of
   *  every state set, unconflicted ones included, but need only their auth_events). Must agree
   *  with `getEvent`. */
  authEvents?: (eventId: string) => readonly string[] | undefined;
  /** Computes the unconflicted state map and conflicted state set when the caller knows a
   *  cheaper way than comparing every key of every set (e.g. state sets stored as differences
   *  from a shared base); undefined = the general way. Must give the same sets. */
  split?: (stateSets: StateIdMap[]) => Split | undefined;
}

export function resolveV2(
  graph: EventGraph,
  stateSets: StateIdMap[],
  opts: ResolveOptions = {},
): StateIdMap {
  const v21 = graph.rv.stateRes === "v2.1";
  const { isRejected } = opts;

  // Unconflicted state map and conflicted state set.
  const split = opts.split?.(stateSets) ?? splitConflicted(stateSets);
  if (split.conflicted.size === 0) return split.unconflicted;

  // "The full conflicted set is the union of the conflicted state set, [v2.1: the conflicted
  // state subgraph,] and the auth difference."
  const full = authDifference(graph, split);
  for (const id of split.conflicted) if (graph.get(id)) full.add(id);
  if (v21) for (const id of conflictedStateSubgraph(graph, split.conflicted)) full.add(id);

  // 1. "Select the set X of all power events that appear in the full conflicted set. For each
  //    such power event P, enlarge X by adding the events in the auth chain of P which also
  //    belong to the full conflicted set. Sort X into a list using the reverse topological
  //    power ordering."
  const powerEvents = [...full].filter((id) => isPowerEvent(graph.get(id)!));
  const x = new Set(powerEvents);
  for (const id of graph.authChainUnion(powerEvents)) if (full.has(id)) x.add(id);
  const sortedX = reverseTopologicalPowerOrdering(graph, x);

  // 2. "Apply the iterative auth checks algorithm, starting from the unconflicted state map
  //    [v2.1: starting from an empty state map], to the list of events from the previous step
  //    to get a partially resolved state."
  const partial: StateMap = new Map();
  if (!v21) {
    for (const [k, id] of split.unconflicted) {
      const ev = graph.get(id);
      if (ev) partial.set(k, ev);
    }
  }
  iterativeAuthChecks(graph, partial, sortedX, isRejected);

  // 3. "Take all remaining events that weren't picked in step 1 and order them by the mainline
  //    ordering based on the power level in the partially resolved state obtained in step 2."
  const remaining: RoomEvent[] = [];
  for (const id of full) if (!x.has(id)) remaining.push(graph.get(id)!);
  const sortedRest = mainlineOrdering(graph, remaining, partial.get(POWER_LEVELS));

  // 4. "Apply the iterative auth checks algorithm on the partial resolved state and the list of
  //    events from the previous step."
  iterativeAuthChecks(graph, partial, sortedRest, isRejected);

  // 5. "Update the result by replacing any event with the event with the same key from the
  //    unconflicted state map, if such an event exists, to get the final resolved state."
  const resolved: StateIdMap = new Map();
  for (const [k, ev] of partial) resolved.set(k, ev.event_id);
  for (const [k, id] of split.unconflicted) resolved.set(k, id);
  return resolved;
}
