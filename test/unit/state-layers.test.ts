// LayeredState (durable-objects/room/state-layers.ts): a state map sharing a base with its parent must
// read exactly like the plain map it stands for, through chains of changes and flattening.
import { describe, expect, it } from "vitest";
import { diffShared, LayeredState, layerState, splitShared } from "../../durable-objects/room/state-layers";
import { splitConflicted } from "../../src/core/state-res/conflicts";
import type { StateIdMap, StateKey } from "../../src/core/types";

const key = (i: number) => `m.room.member\u0000@u${i}:example.org` as StateKey;
const sorted = (m: StateIdMap) => [...m].sort(([a], [b]) => (a < b ? -1 : 1));
/** A seeded generator (mulberry32): rnd(n) is an integer in [0, n). */
function seeded(seed: number): (n: number) => number {
  return (n) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

describe("LayeredState", () => {
  it("reads like the plain map through 2,000 random changes", () => {
    const rnd = seeded(7);
    const plain = new Map<StateKey, string>();
    for (let i = 0; i < 300; i++) plain.set(key(i), `$e${i}`);
    let layered: StateIdMap = new Map(plain);
    let layeredSeen = false;
    for (let step = 0; step < 2000; step++) {
      const delta = new Map<StateKey, string | null>();
      for (let j = rnd(4); j >= 0; j--) {
        const k = key(rnd(400));
        const v = rnd(5) === 0 ? null : `$s${step}.${j}`;
        delta.set(k, v);
      }
      for (const [k, v] of delta) {
        if (v === null) plain.delete(k);
        else plain.set(k, v);
      }
      layered = layerState(layered, delta);
      layeredSeen ||= layered instanceof LayeredState;
      expect(layered.size).toBe(plain.size);
      if (step % 50 === 0) {
        expect(sorted(layered)).toEqual(sorted(plain));
        expect(sorted(new Map(layered))).toEqual(sorted(plain));
        expect([...layered.keys()].sort()).toEqual([...plain.keys()].sort());
        expect([...layered.values()].sort()).toEqual([...plain.values()].sort());
        const viaForEach: [StateKey, string][] = [];
        layered.forEach((v, k) => viaForEach.push([k, v]));
        expect(viaForEach.sort(([a], [b]) => (a < b ? -1 : 1))).toEqual(sorted(plain));
      }
      for (let i = 0; i < 400; i += 37) {
        expect(layered.get(key(i))).toBe(plain.get(key(i)));
        expect(layered.has(key(i))).toBe(plain.has(key(i)));
      }
    }
    expect(layeredSeen).toBe(true);
  });

  it("shares the base and keeps only real differences; large overlays are flattened", () => {
    const base = new Map<StateKey, string>();
    for (let i = 0; i < 5000; i++) base.set(key(i), `$e${i}`);
    const a = layerState(base, [[key(1), "$x"], [key(2), null], [key(9999), "$new"]]) as LayeredState;
    expect(a).toBeInstanceOf(LayeredState);
    expect(a.base).toBe(base);
    expect(a.size).toBe(5000);
    expect(a.get(key(2))).toBeUndefined();
    expect(a.has(key(2))).toBe(false);
    // Back to the base's values: no overlay left, the base itself.
    expect(layerState(a, [[key(1), "$e1"], [key(2), "$e2"], [key(9999), null]])).toBe(base);
    // Removing a key the base lacks is no difference either.
    expect((layerState(base, [[key(99999), null]]) as StateIdMap).size).toBe(5000);
    const big = layerState(a, Array.from({ length: 2000 }, (_, i) => [key(i), `$y${i}`] as [StateKey, string]));
    expect(big).not.toBeInstanceOf(LayeredState);
    expect(big.get(key(3))).toBe("$y3");
    expect(big.has(key(2))).toBe(true);
    expect(big.get(key(9999))).toBe("$new");
    expect(() => (a as Map<StateKey, string>).set(key(1), "$z")).toThrow(/read-only/);
    expect(() => (a as Map<StateKey, string>).delete(key(1))).toThrow(/read-only/);
  });
});

describe("splitShared and diffShared", () => {
  // Small bases flatten often: sets then sit on different bases, related by flattening.
  it.each([500, 40])("give the general split and diff of state sets sharing a base of %i entries", (size) => {
    const rnd = seeded(11 + size);
    const base = new Map<StateKey, string>();
    for (let i = 0; i < size; i++) base.set(key(i), `$e${i}`);
    let related = 0;
    let fastSplits = 0;
    for (let round = 0; round < 30; round++) {
      const sets: StateIdMap[] = [];
      // Each set continues from an earlier one (a DAG's branches), or starts at the base.
      for (let j = 0; j < 1 + rnd(6); j++) {
        let m: StateIdMap = j > 0 && rnd(2) === 0 ? sets[rnd(j)]! : base;
        for (let step = rnd(size < 100 ? 24 : 8); step > 0; step--) {
          const delta: [StateKey, string | null][] = [];
          for (let c = rnd(5); c >= 0; c--) {
            // Shared changes (same key and event on several sets) as well as private ones.
            const i = rnd(3) === 0 ? rnd(10) : rnd(size + 100);
            delta.push([key(i), rnd(6) === 0 ? null : rnd(2) === 0 ? `$shared${i}` : `$r${round}.${j}.${step}.${c}`]);
          }
          m = layerState(m, delta);
        }
        sets.push(m);
      }
      if (new Set(sets.map((m) => (m instanceof LayeredState ? m.base : m))).size > 1) related++;
      // Undefined (bases too far apart: the general way applies) or the general split.
      const fast = splitShared(sets);
      if (fast) {
        fastSplits++;
        const general = splitConflicted(sets);
        expect(sorted(fast.unconflicted)).toEqual(sorted(general.unconflicted));
        expect([...fast.conflicted].sort()).toEqual([...general.conflicted].sort());
        expect(fast.conflictedPerSet.map((c) => [...c].sort())).toEqual(general.conflictedPerSet.map((c) => [...c].sort()));
      }
      for (const a of sets) {
        for (const b of sets) {
          const plain = new Map<StateKey, string | null>();
          for (const [k, v] of b) if (a.get(k) !== v) plain.set(k, v);
          for (const k of a.keys()) if (!b.has(k)) plain.set(k, null);
          const d = diffShared(a, b);
          if (d) expect(sorted(d as StateIdMap)).toEqual(sorted(plain as StateIdMap));
        }
      }
    }
    // Every round's sets share an ancestor base within reach (the base all of them started from).
    expect(fastSplits).toBe(30);
    if (size < 100) expect(related).toBeGreaterThan(5);
    // Sets without a common base: the general way applies.
    expect(splitShared([new Map(base), new Map(base)])).toBeUndefined();
    expect(diffShared(new Map(base), new Map(base))).toBeUndefined();
  });
});
