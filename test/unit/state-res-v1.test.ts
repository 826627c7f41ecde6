// State resolution for room version 1 (spec: rooms/v1.md "State resolution") on hand-built forks.
// The expected outcomes are derived from the spec's passes in the comment above each test.
import { describe, expect, it } from "vitest";
import { resolveState } from "../../src/core/state-res";
import type { StateIdMap, StateKey } from "../../src/core/types";
import { ALICE, BOB, CHARLIE, Dag, PL, TOPIC, member, readable } from "./state-res-builder";

import { sha1Hex } from "../../src/core/sha1";

const sha1 = sha1Hex;
function resolve(d: Dag, ...sets: StateIdMap[]) {
  return readable(resolveState(d.rv, sets, d.getEvent));
}
function expected(base: StateIdMap, changes: Record<StateKey, string>) {
  const s = new Map(base);
  for (const [k, v] of Object.entries(changes)) s.set(k, v);
  return readable(s);
}

describe("state resolution v1 (room version 1)", () => {
  it("sha1Hex matches Web Crypto's SHA-1", async () => {
    for (const text of ["", "abc", "$TX", "é€😀", "x".repeat(55), "y".repeat(56), "z".repeat(64), "w".repeat(200)]) {
      const d = new Uint8Array(await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text)));
      expect(sha1Hex(text)).toBe([...d].map((b) => b.toString(16).padStart(2, "0")).join(""));
    }
  });

  // Fork after PA (Bob 50). Branch 1: Alice re-joins (MA) and bans Bob (MB). Branch 2: Bob sends
  // PB. Conflicted: PL {PA, PB}, Alice {IMA, MA}, Bob {IMB, MB}; R starts without those keys.
  // PL pass: PA (lower depth) goes in; PB's sender has no membership in R → not allowed, stop.
  // Member passes: Alice IMA then MA (allowed); Bob IMB then MB (Alice, 100 under PA, may ban).
  it("power levels, then members: a banned user's concurrent PL change is dropped", () => {
    const d = new Dag("1").init({}, [BOB, CHARLIE]);
    d.powerLevels("$PA", ALICE, { [BOB]: 50 });
    d.join("$MA", ALICE);
    d.membership("$MB", ALICE, BOB, "ban");
    d.powerLevels("$PB", BOB, { [BOB]: 50 }, {}, { prev: ["$PA"] });
    const r = resolve(d, d.stateAfter("$MB"), d.stateAfter("$PB"));
    expect(r).toEqual(expected(d.stateAfter("$PA"), { [PL]: "$PA", [member(ALICE)]: "$MA", [member(BOB)]: "$MB" }));
  });

  // Two topics at the same depth on two branches, both allowed: the lowest sha1(event_id) wins.
  // A deeper topic whose sender was banned on its branch fails auth in R and is passed over.
  it("other state: highest depth and lowest sha1(event_id) among events that pass auth", () => {
    const d = new Dag("1").init({ [BOB]: 50 }, [BOB, CHARLIE]);
    d.topic("$TX", ALICE);
    d.topic("$TY", BOB, "y", { prev: ["$IMC"] });
    const a = d.stateAfter("$TX");
    const b = d.stateAfter("$TY");
    const winner = sha1("$TX") < sha1("$TY") ? "$TX" : "$TY";
    expect(resolve(d, a, b)).toEqual(expected(a, { [TOPIC]: winner }));

    // Branch 1 bans Bob; branch 2 has Bob's deeper topic. Bob's member key resolves to the ban
    // (member pass), so his topic fails auth in R and Alice's shallower one is taken.
    const e = new Dag("1").init({ [BOB]: 50 }, [BOB, CHARLIE]);
    e.topic("$T1", ALICE);
    e.membership("$BAN", ALICE, BOB, "ban");
    e.join("$MC2", CHARLIE, { prev: ["$T1"] });
    e.join("$MC3", CHARLIE);
    e.topic("$T2", BOB, "bob's", { prev: ["$MC3"] });
    const r = resolve(e, e.stateAfter("$BAN"), e.stateAfter("$T2"));
    expect(r[`m.room.topic|`]).toBe("$T1");
    expect(r[`m.room.member|${BOB}`]).toBe("$BAN");
  });

  it("keeps what the states agree on, and keys only some states hold", () => {
    const d = new Dag("1").init({}, [BOB]);
    d.topic("$T", ALICE);
    const withTopic = d.stateAfter("$T");
    const without = d.stateAfter("$IMB");
    expect(resolve(d, withTopic, without)).toEqual(readable(withTopic));
  });
});
