// State maps that share storage (the RoomDO's state-group cache).
//
// Every state group the RoomDO holds in memory used to be a full copy of the room's state: a new
// group copied its parent's map, and in a room with 10,000+ state entries the cache's budget
// held ~20 of them. Under concurrent joins the states at the forward extremities (asked for at
// every event) fell out of the cache and were rebuilt from storage, ~15,000 rows each. A
// LayeredState is a full base map plus the entries that differ from it: a group derived from
// another costs what changed, not the whole state, and many groups share one base.
import type { StateIdMap, StateKey } from "../../src/core/types";
import type { Split } from "../../src/core/state-res";

/** Overlays larger than this (or than the base, in small rooms) are flattened into a new base:
 *  a child copies its parent's overlay, so this bounds that copy, and a flatten (a copy of the
 *  whole state) happens at most once per this many changed entries. */
const MAX_OVERLAY = 1024;

/**
 * What every read-only state map shares: iteration and forEach go through the subclass's
 * `entries`, and writing throws. Subclasses answer get, has, size, entries, keys and values.
 */
export abstract class ReadOnlyStateMap extends Map<StateKey, string> {
  override [Symbol.iterator](): MapIterator<[StateKey, string]> {
    return this.entries();
  }
  override forEach(fn: (value: string, key: StateKey, map: Map<StateKey, string>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }
  override set(): this {
    throw new Error(`${this.constructor.name} is read-only`);
  }
  override delete(): boolean {
    throw new Error(`${this.constructor.name} is read-only`);
  }
  override clear(): void {
    throw new Error(`${this.constructor.name} is read-only`);
  }
}

/**
 * A read-only state map: `base` with `over` applied (an entry with value null is removed).
 * Behaves as a Map for reading (get, has, size, iteration, forEach, `new Map(x)`); writing
 * throws. State maps handed out by the RoomDO are never modified, so sharing is safe.
 */
export class LayeredState extends ReadOnlyStateMap {
  readonly base: StateIdMap;
  readonly over: ReadonlyMap<StateKey, string | null>;
  private readonly n: number;

  constructor(base: StateIdMap, over: Map<StateKey, string | null>) {
    super();
    this.base = base;
    this.over = over;
    let n = base.size;
    for (const [k, v] of over) {
      const inBase = base.has(k);
      if (v === null && inBase) n--;
      else if (v !== null && !inBase) n++;
    }
    this.n = n;
  }

  override get size(): number {
    return this.n;
  }

  override get(k: StateKey): string | undefined {
    const v = this.over.get(k);
    if (v !== undefined) return v ?? undefined;
    return this.base.get(k);
  }

  override has(k: StateKey): boolean {
    const v = this.over.get(k);
    if (v !== undefined) return v !== null;
    return this.base.has(k);
  }

  override *entries(): MapIterator<[StateKey, string]> {
    for (const e of this.base) {
      const v = this.over.get(e[0]);
      if (v === undefined) yield e;
      else if (v !== null) yield [e[0], v];
    }
    for (const [k, v] of this.over) if (v !== null && !this.base.has(k)) yield [k, v];
  }

  override *keys(): MapIterator<StateKey> {
    for (const k of this.base.keys()) if (this.over.get(k) !== null) yield k;
    for (const [k, v] of this.over) if (v !== null && !this.base.has(k)) yield k;
  }

  override *values(): MapIterator<string> {
    for (const [k, b] of this.base) {
      const v = this.over.get(k);
      if (v === undefined) yield b;
      else if (v !== null) yield v;
    }
    for (const [k, v] of this.over) if (v !== null && !this.base.has(k)) yield v;
  }

}

/** `parent` with `delta` applied (null = removed), sharing the parent's base when the
 *  differences stay small; otherwise a new full map. */
export function layerState(parent: StateIdMap, delta: Iterable<[StateKey, string | null]>): StateIdMap {
  const base = parent instanceof LayeredState ? parent.base : parent;
  const over = new Map(parent instanceof LayeredState ? parent.over : undefined);
  for (const [k, v] of delta) {
    // Keep only real differences from the base.
    if (v === null ? !base.has(k) : base.get(k) === v) over.delete(k);
    else over.set(k, v);
  }
  if (over.size === 0) return base;
  if (over.size <= Math.min(MAX_OVERLAY, base.size)) return new LayeredState(base, over);
  const full = new Map(base);
  for (const [k, v] of over) {
    if (v === null) full.delete(k);
    else full.set(k, v);
  }
  lineage.set(full, { parent: base, over });
  return full;
}

/** How a base made by flattening came about: the base it was flattened from and the overlay
 *  applied to it. States on different bases can then be compared by their differences from a
 *  base both came from (commonBase). */
const lineage = new WeakMap<StateIdMap, { parent: StateIdMap; over: ReadonlyMap<StateKey, string | null> }>();
/** Flattenings followed back at most. */
const MAX_LINEAGE = 8;
const NO_DIFFERENCES: ReadonlyMap<StateKey, string | null> = new Map();

const baseOf = (m: StateIdMap) => (m instanceof LayeredState ? m.base : m);

/** A base, the base it was flattened from, and so on (at most MAX_LINEAGE steps back). */
function ancestry(base: StateIdMap): StateIdMap[] {
  const out = [base];
  for (let link = lineage.get(base); link && out.length <= MAX_LINEAGE; link = lineage.get(link.parent)) out.push(link.parent);
  return out;
}

/** The nearest base every map's base was flattened from (or is), with each map's differences
 *  from it: the map's own overlay and the overlays that led from that base to the map's base.
 *  Branches of a DAG flatten their states separately, so this is often an older base than
 *  any map's own. Undefined when there is none within MAX_LINEAGE flattenings. */
function commonBase(maps: StateIdMap[]): { base: StateIdMap; overs: ReadonlyMap<StateKey, string | null>[] } | undefined {
  const bases = [...new Set(maps.map(baseOf))];
  const chains = bases.map(ancestry);
  const base = chains[0]!.find((a) => chains.every((c) => c.includes(a)));
  if (!base) return undefined;
  const overs = maps.map((m) => {
    const own = m instanceof LayeredState ? m.over : NO_DIFFERENCES;
    const chain = chains[bases.indexOf(baseOf(m))]!;
    const steps = chain.indexOf(base);
    if (steps === 0) return own;
    const out = new Map<StateKey, string | null>();
    for (const src of [own, ...chain.slice(0, steps).map((b) => lineage.get(b)!.over)]) {
      for (const k of src.keys()) {
        if (out.has(k)) continue;
        const v = m.get(k);
        if (v !== base.get(k)) out.set(k, v ?? null);
      }
    }
    return out;
  });
  return { base, overs };
}

/**
 * State resolution's split (unconflicted state map, conflicted state set) of state sets that
 * share a base (or whose bases lead to one: commonBase), looking only at the keys where some set
 * differs from that base: on every other key all sets hold the base's event, so it is
 * unconflicted. The same sets as splitConflicted
 * (src/core/state-res/conflicts.ts) at the cost of the differences, not of the whole state
 * times the number of sets. Undefined when the sets do not share a base.
 */
export function splitShared(stateSets: StateIdMap[]): Split | undefined {
  if (stateSets.length === 0) return undefined;
  const common = commonBase(stateSets);
  if (!common) return undefined;
  const { base } = common;
  const keys = new Set<StateKey>();
  for (const o of common.overs) for (const k of o.keys()) keys.add(k);
  const over = new Map<StateKey, string | null>();
  const conflicted = new Set<string>();
  const conflictedPerSet = stateSets.map(() => new Set<string>());
  for (const k of keys) {
    const first = stateSets[0]!.get(k);
    if (first !== undefined && stateSets.every((m) => m.get(k) === first)) {
      over.set(k, first);
      continue;
    }
    over.set(k, null);
    stateSets.forEach((m, i) => {
      const v = m.get(k);
      if (v === undefined) return;
      conflicted.add(v);
      conflictedPerSet[i]!.add(v);
    });
  }
  return { unconflicted: layerState(base, over), conflicted, conflictedPerSet };
}

/** The entries of `next` that differ from `prev` (null = removed), when both can be compared
 *  against a common base (commonBase): only their differences from it are compared. Undefined
 *  otherwise. */
export function diffShared(prev: StateIdMap, next: StateIdMap): Map<StateKey, string | null> | undefined {
  const common = commonBase([prev, next]);
  if (!common) return undefined;
  const out = new Map<StateKey, string | null>();
  for (const o of common.overs) {
    for (const k of o.keys()) {
      if (out.has(k)) continue;
      const a = prev.get(k);
      const b = next.get(k);
      if (a !== b) out.set(k, b ?? null);
    }
  }
  return out;
}
