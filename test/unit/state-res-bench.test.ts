// Prints state resolution timings for forks with ~1,000 and ~10,000 conflicted member events
// (bench/state-res.ts). Not a timed assertion: the numbers are for reading.
import { describe, expect, it } from "vitest";
import { benchStateRes, buildMemberFork, formatResults } from "../../bench/state-res";
import { resolveState } from "../../src/core/state-res";
import { stateKey } from "../../src/core/types";

describe("state resolution benchmark", () => {
  it("resolves forks of member events and prints the time taken", () => {
    const results = benchStateRes([1000, 10000]);
    console.log(formatResults(results));
    // Every event is fetched at most once per resolution (getEvent is memoised).
    for (const r of results) expect(r.fetches).toBeLessThanOrEqual(r.events);
  });

  // On the benchmark fork: every join of either branch survives (joins do not conflict with one
  // another), Alice's bans (power events) beat the early members' concurrent renames (a
  // rename is a re-join, which a mere kick would not have prevented in a public room), and the
  // power levels resolve to branch B's (both by Alice: same power, B's is newer).
  it("gets the benchmark fork right", () => {
    for (const version of ["11", "12"]) {
      const f = buildMemberFork(200, version);
      const r = resolveState(f.rv, [f.a, f.b], (id) => f.events.get(id));
      expect(r.size).toBe(new Set([...f.a.keys(), ...f.b.keys()]).size);
      for (let i = 0; i < 100; i++) {
        expect(r.get(stateKey("m.room.member", `@a${i}:bench.example`))).toBe(`$ajoin${i}`);
        expect(r.get(stateKey("m.room.member", `@b${i}:bench.example`))).toBe(`$bjoin${i}`);
      }
      expect(r.get(stateKey("m.room.member", "@e0:bench.example"))).toBe("$ban0");
      expect(r.get(stateKey("m.room.member", "@e1:bench.example"))).toBe("$early1");
      expect(r.get(stateKey("m.room.power_levels", ""))).toBe("$plb");
    }
  });
});
