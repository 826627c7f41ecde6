// The two orderings of state resolution v2: reverse topological power ordering (for power
// events) and mainline ordering (for everything else).
import type { RoomEvent } from "../types";
import type { EventGraph } from "./graph";
import { postOrder } from "./conflicts";
import { authEventsState, powerLevelOf } from "./power";

/**
 * "A power event is a state event with type m.room.power_levels or m.room.join_rules, or a state
 * event with type m.room.member where the membership is leave or ban and the sender does not
 * match the state_key."
 *
 * We also count m.room.create (as Synapse does): a create event should never be conflicted, but
 * if it ever is it must be ordered before everything it authorises, not mainline-sorted.
 */
export function isPowerEvent(ev: RoomEvent): boolean {
  if (ev.state_key === undefined) return false;
  switch (ev.type) {
    case "m.room.power_levels":
    case "m.room.join_rules":
      return ev.state_key === "";
    case "m.room.create":
      return ev.state_key === "";
    case "m.room.member": {
      const m = ev.content["membership"];
      return (m === "leave" || m === "ban") && ev.sender !== ev.state_key;
    }
    default:
      return false;
  }
}

/** The `m.room.power_levels` event among `ev`'s auth events, if any. */
export function powerLevelsAuthEvent(graph: EventGraph, ev: RoomEvent): RoomEvent | undefined {
  for (const id of ev.auth_events) {
    const a = graph.get(id);
    if (a && a.type === "m.room.power_levels" && a.state_key === "") return a;
  }
  return undefined;
}

/**
 * Reverse topological power ordering: "the lexicographically smallest topological ordering based
 * on the DAG formed by auth events … ordered from earliest event to latest … for events x and y,
 * x < y if
 *   1. x's sender has greater power level than y's sender, when looking at their respective
 *      auth_events; or
 *   2. the senders have the same power level, but x's origin_server_ts is less than y's; or
 *   3. … the same origin_server_ts, but x's event_id is less than y's event_id.
 * The reverse topological power ordering can be found by sorting the events using Kahn's
 * algorithm for topological sorting, and at each step selecting, among all the candidate
 * vertices, the smallest vertex using the above comparison relation."
 *
 * "Based on the DAG formed by auth events": x must precede y whenever x is in y's auth chain,
 * even if the path between them leaves the set being sorted. So the edges we give Kahn's
 * algorithm are, for each y, its *nearest* in-set ancestors (found by folding over the auth
 * graph once); their transitive closure is exactly "is in the auth chain of", restricted to the set.
 */
export function reverseTopologicalPowerOrdering(graph: EventGraph, ids: Set<string>): RoomEvent[] {
  // nearest[n] = the in-set events reachable from n without passing through another in-set event.
  const EMPTY: ReadonlySet<string> = new Set();
  const nearest = new Map<string, ReadonlySet<string>>();
  for (const n of postOrder(graph, ids, () => true)) {
    let acc: Set<string> | undefined;
    for (const a of graph.get(n)!.auth_events) {
      const add = ids.has(a) ? [a] : nearest.get(a);
      if (!add) continue;
      for (const x of add) (acc ??= new Set()).add(x);
    }
    nearest.set(n, acc ?? EMPTY);
  }

  // Kahn's algorithm, earliest first: a vertex becomes a candidate once all its in-set
  // ancestors have been emitted.
  const pending = new Map<string, number>();
  const children = new Map<string, string[]>();
  const candidates = new MinHeap<SortKey>(compareSortKeys);
  for (const y of ids) {
    const ev = graph.get(y);
    if (!ev) continue;
    const preds = nearest.get(y) ?? EMPTY;
    pending.set(y, preds.size);
    for (const p of preds) {
      let c = children.get(p);
      if (!c) children.set(p, (c = []));
      c.push(y);
    }
  }
  const keyOf = (id: string): SortKey => {
    const ev = graph.get(id)!;
    // "when looking at their respective auth_events" (all of them: rejection plays no part here).
    const power = powerLevelOf(ev.sender, authEventsState(graph, ev), graph.rv);
    return { ev, primary: -power, ts: ev.origin_server_ts, id };
  };
  for (const [id, n] of pending) if (n === 0) candidates.push(keyOf(id));

  const out: RoomEvent[] = [];
  while (candidates.size > 0) {
    const { ev } = candidates.pop()!;
    out.push(ev);
    for (const c of children.get(ev.event_id) ?? []) {
      const n = pending.get(c)! - 1;
      pending.set(c, n);
      if (n === 0) candidates.push(keyOf(c));
    }
  }
  return out;
}

/**
 * Mainline ordering based on the power levels event `p0` (or on no power levels at all, when the
 * partially resolved state has none: then every mainline position is ∞).
 *
 * "The mainline of P0 is the list [P0, P1, …, Pn]" where P_{i+1} is the m.room.power_levels event
 * in the auth_events of P_i. For another event e, "[e1, …, em]" is its own chain of power levels
 * auth events (e0 = e itself is not included); "find the smallest index j ≥ 1 for which e_j
 * belongs to the mainline of P … e_j = P_i … Otherwise set i = ∞ … the mainline position of e
 * is i." Then "x < y if
 *   1. the mainline position of x is greater than the mainline position of y; or
 *   2. the mainline positions are the same, but x's origin_server_ts is less than y's; or
 *   3. … the same origin_server_ts, but x's event_id is less than y's event_id."
 */
export function mainlineOrdering(
  graph: EventGraph,
  events: RoomEvent[],
  p0: RoomEvent | undefined,
): RoomEvent[] {
  const mainline = new Map<string, number>();
  for (let p = p0, i = 0; p && !mainline.has(p.event_id); p = powerLevelsAuthEvent(graph, p), i++) {
    mainline.set(p.event_id, i);
  }

  // position(q) for a power levels event q reached while walking e1, e2, …: its mainline index if
  // it is on the mainline, otherwise the position its own chain leads to. Memoised, iterative.
  const memo = new Map<string, number>();
  const positionFrom = (start: RoomEvent | undefined): number => {
    const walked: string[] = [];
    let result = Infinity;
    for (let q = start; q; q = powerLevelsAuthEvent(graph, q)) {
      const known = mainline.get(q.event_id) ?? memo.get(q.event_id);
      if (known !== undefined) {
        result = known;
        break;
      }
      if (walked.includes(q.event_id)) break; // malformed cycle
      walked.push(q.event_id);
    }
    for (const id of walked) memo.set(id, result);
    return result;
  };

  const keyed = events.map((ev) => ({
    ev,
    // Greater mainline position sorts first; ∞ (not based on the mainline at all) first of all.
    primary: -positionFrom(powerLevelsAuthEvent(graph, ev)),
    ts: ev.origin_server_ts,
    id: ev.event_id,
  }));
  keyed.sort(compareSortKeys);
  return keyed.map((k) => k.ev);
}

interface SortKey {
  ev: RoomEvent;
  /** Smaller sorts first (negated power level / negated mainline position). */
  primary: number;
  ts: number;
  id: string;
}

function compareSortKeys(a: SortKey, b: SortKey): number {
  if (a.primary !== b.primary) return a.primary < b.primary ? -1 : 1;
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  // Event IDs compare by code unit, not by locale.
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A small binary min-heap (candidates in Kahn's algorithm). */
class MinHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly cmp: (a: T, b: T) => number) {}
  get size(): number {
    return this.items.length;
  }
  push(x: T): void {
    const h = this.items;
    h.push(x);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.cmp(h[i]!, h[parent]!) >= 0) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }
  pop(): T | undefined {
    const h = this.items;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.cmp(h[l]!, h[m]!) < 0) m = l;
        if (r < h.length && this.cmp(h[r]!, h[m]!) < 0) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
