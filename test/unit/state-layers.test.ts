// LayeredState (durable-objects/state-layers.ts): a state map sharing a base with its parent must
// read exactly like the plain map it stands for, through chains of changes and flattening.
import { describe, expect, it } from "vitest";
import { diffShared, LayeredState, layerState, splitShared } from "../../durable-objects/state-layers";
import { splitConflicted } from "../../src/core/state-res/conflicts";
import type { StateIdMap, StateKey } from "../../src/core/types";

const key = (i: number) => `m.room.member\u0000@u${i}:example.org` as StateKey;
const sorted = (m: StateIdMap) => [...m].sort(([a], [b]) => (a < b ? -1 : 1));

describe("LayeredState", () => {
  it("reads like the plain map through 2,000 random changes", () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
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
  it("give the general split and diff of state sets sharing a base", () => {
    let seed = 11;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    const base = new Map<StateKey, string>();
    for (let i = 0; i < 500; i++) base.set(key(i), `$e${i}`);
    for (let round = 0; round < 30; round++) {
      const sets: StateIdMap[] = [];
      for (let j = 0; j < 1 + rnd(6); j++) {
        let m: StateIdMap = base;
        for (let step = rnd(8); step > 0; step--) {
          const delta: [StateKey, string | null][] = [];
          for (let c = rnd(5); c >= 0; c--) {
            // Shared changes (same key and event on several sets) as well as private ones.
            const i = rnd(3) === 0 ? rnd(10) : rnd(600);
            delta.push([key(i), rnd(6) === 0 ? null : rnd(2) === 0 ? `$shared${i}` : `$r${round}.${j}.${step}.${c}`]);
          }
          m = layerState(m, delta);
        }
        sets.push(m);
      }
      const fast = splitShared(sets)!;
      const general = splitConflicted(sets);
      expect(sorted(fast.unconflicted)).toEqual(sorted(general.unconflicted));
      expect([...fast.conflicted].sort()).toEqual([...general.conflicted].sort());
      expect(fast.conflictedPerSet.map((c) => [...c].sort())).toEqual(general.conflictedPerSet.map((c) => [...c].sort()));
      for (const a of sets) {
        for (const b of sets) {
          const plain = new Map<StateKey, string | null>();
          for (const [k, v] of b) if (a.get(k) !== v) plain.set(k, v);
          for (const k of a.keys()) if (!b.has(k)) plain.set(k, null);
          expect(sorted(diffShared(a, b)! as StateIdMap)).toEqual(sorted(plain as StateIdMap));
        }
      }
    }
    // Sets without a common base: the general way applies.
    expect(splitShared([new Map(base), new Map(base)])).toBeUndefined();
    expect(diffShared(new Map(base), new Map(base))).toBeUndefined();
  });
});
