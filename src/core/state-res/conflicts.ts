// The sets the algorithm starts from: unconflicted state map, conflicted state set, auth
// difference, conflicted state subgraph (v2.1) and the full conflicted set.
import type { StateIdMap, StateKey } from "../types";
import type { EventGraph } from "./graph";

export interface Split {
  /** "If a given key K is present in every S_i with the same value V in each state map, then
   *  the pair (K, V) belongs to the unconflicted state map." */
  unconflicted: StateIdMap;
  /** "Otherwise, V belongs to the conflicted state set." Event IDs, any number per key. */
  conflicted: Set<string>;
  /** For each S_i, the conflicted events it holds (its values for conflicted keys). */
  conflictedPerSet: Set<string>[];
}

export function splitConflicted(stateSets: StateIdMap[]): Split {
  const unconflicted: StateIdMap = new Map();
  const conflicted = new Set<string>();
  const conflictedPerSet = stateSets.map(() => new Set<string>());
  const conflict = (k: StateKey) => {
    stateSets.forEach((s, i) => {
      const v = s.get(k);
      if (v === undefined) return;
      conflicted.add(v);
      conflictedPerSet[i]!.add(v);
    });
  };
  // Keys of the first set, then keys only the others have (always conflicted: missing from the
  // first) — the order a union of all keys would have, without building that union: the sets
  // are whole room states, thousands of keys each, and mostly the same keys.
  const [first, ...rest] = stateSets;
  for (const [k, v] of first!) {
    if (rest.every((s) => s.get(k) === v)) unconflicted.set(k, v);
    else conflict(k);
  }
  const seen = new Set<StateKey>();
  for (const s of rest) {
    for (const k of s.keys()) {
      if (first!.has(k) || seen.has(k)) continue;
      seen.add(k);
      conflict(k);
    }
  }
  return { unconflicted, conflicted, conflictedPerSet };
}

/**
 * "The auth difference is calculated by first calculating the full auth chain for each state
 * S_i, that is the union of the auth chains for each event in S_i, and then taking every event
 * that doesn't appear in every auth chain. If C_i is the full auth chain of S_i, then the auth
 * difference is ∪ C_i − ∩ C_i."
 *
 * Interpretation: we count the events of S_i themselves as part of C_i (as Synapse does). This
 * only matters for unconflicted events — present in every S_i, so never in the difference — and
 * keeps them out of the re-resolution (which step 5 would overwrite anyway, but which in v2.1
 * would otherwise feed them into the iterative auth checks that deliberately start from empty).
 *
 * Computed without walking every state set's whole history k times: let U be the unconflicted
 * events and their auth chains. U lies in every C_i, and is closed under "auth event of", so an
 * event outside U can only be reached from conflicted events along paths that avoid U. Walk from
 * each S_i's conflicted events, stopping at U, to get Y_i = C_i − U; the difference is
 * ∪ Y_i − ∩ Y_i.
 */
export function authDifference(graph: EventGraph, split: Split): Set<string> {
  // U in one walk: every unconflicted event, and every event we have in their auth chains.
  // (The unconflicted state is most of the room's state: thousands of events in a large room.)
  const u = new Set<string>();
  const stack: string[] = [];
  const push = (authEvents: readonly string[]) => {
    for (const a of authEvents) {
      if (u.has(a) || !graph.authEventsOf(a)) continue;
      u.add(a);
      stack.push(a);
    }
  };
  for (const id of split.unconflicted.values()) {
    if (u.has(id)) continue; // reached as an auth event already: walked from there
    u.add(id);
    const auth = graph.authEventsOf(id);
    if (auth) push(auth);
    while (stack.length > 0) push(graph.authEventsOf(stack.pop()!)!);
  }
  const inU = (id: string) => u.has(id);

  const ys = split.conflictedPerSet.map((starts) => {
    const y = graph.authChainUnion(starts, inU);
    for (const id of starts) if (!u.has(id) && graph.get(id)) y.add(id);
    return y;
  });

  const union = new Set<string>();
  for (const y of ys) for (const id of y) union.add(id);
  const diff = new Set<string>();
  for (const id of union) if (!ys.every((y) => y.has(id))) diff.add(id);
  return diff;
}

/**
 * v2.1 (room version 12): "Starting from an event in the conflicted state set and following
 * auth_events edges may lead to another event in the conflicted state set. The union of all such
 * paths between any pair of events in the conflicted state set (including endpoints) forms a
 * subgraph of the original auth_event graph, called the conflicted state subgraph."
 *
 * An event n is on such a path iff n is a conflicted event, or n is in the auth chain of some
 * conflicted event and some conflicted event is in the auth chain of n. We take the ancestors A
 * of the conflicted set, then decide "reaches a conflicted event" for each event of A with one
 * memoised post-order pass (ancestors before descendants).
 */
export function conflictedStateSubgraph(graph: EventGraph, conflicted: Set<string>): Set<string> {
  const ancestors = graph.authChainUnion(conflicted);
  const reaches = new Map<string, boolean>();
  for (const id of postOrder(graph, ancestors, (id) => ancestors.has(id))) {
    let r = false;
    for (const a of graph.get(id)!.auth_events) {
      if (conflicted.has(a) || reaches.get(a)) {
        r = true;
        break;
      }
    }
    reaches.set(id, r);
  }
  const sub = new Set<string>();
  for (const id of conflicted) if (graph.get(id)) sub.add(id);
  for (const id of ancestors) if (conflicted.has(id) || reaches.get(id)) sub.add(id);
  return sub;
}

/**
 * Events of `starts` and their ancestors that satisfy `include`, in post-order: every event
 * comes after all of its (included) auth events. Iterative DFS, so deep chains are fine. The
 * walk does not pass through excluded events.
 */
export function postOrder(
  graph: EventGraph,
  starts: Iterable<string>,
  include: (id: string) => boolean,
): string[] {
  const out: string[] = [];
  const state = new Map<string, 1 | 2>(); // 1 = on stack, 2 = done
  const stack: { id: string; auth: string[]; i: number }[] = [];
  for (const s of starts) {
    if (state.has(s) || !include(s)) continue;
    const ev = graph.get(s);
    if (!ev) continue;
    state.set(s, 1);
    stack.push({ id: s, auth: ev.auth_events, i: 0 });
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.i < top.auth.length) {
        const a = top.auth[top.i++]!;
        if (state.has(a) || !include(a)) continue; // a cycle (malformed DAG) is simply cut here
        const aev = graph.get(a);
        if (!aev) continue;
        state.set(a, 1);
        stack.push({ id: a, auth: aev.auth_events, i: 0 });
      } else {
        stack.pop();
        state.set(top.id, 2);
        out.push(top.id);
      }
    }
  }
  return out;
}
