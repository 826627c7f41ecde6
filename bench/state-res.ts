// State resolution benchmark: a two-branch fork with N conflicted member events.
//
//   base: create, Alice joins, power levels, public join rules, N/100 early members join
//   branch A: Alice changes power levels, N/2 users join, Alice bans half the early members
//   branch B: Alice changes power levels, N/2 other users join, the early members change their display name
//
// Every join is conflicted (present in one branch, absent in the other), the PL event and the
// early members' memberships too; bans and PL events go through the reverse topological power
// ordering, the joins through the mainline ordering. Prints wall-clock resolution time.
//
// Run: via the vitest wrapper (npx vitest run --project workers test/unit/state-res-bench.test.ts,
// 1,000 and 10,000), or standalone in Node:
//   npx esbuild bench/state-res.ts --bundle --platform=node --format=esm --outfile=/tmp/sr.mjs \
//     && node /tmp/sr.mjs 1000 10000
import { resolveState } from "../src/core/state-res";
import { getRoomVersion, type RoomVersion } from "../src/core/room-versions";
import { stateKey, type JsonObject, type RoomEvent, type StateIdMap } from "../src/core/types";

const ALICE = "@alice:bench.example";

export interface Fork {
  rv: RoomVersion;
  events: Map<string, RoomEvent>;
  a: StateIdMap;
  b: StateIdMap;
  conflictedKeys: number;
}

export function buildMemberFork(n: number, version = "12"): Fork {
  const rv = getRoomVersion(version)!;
  const roomId = rv.roomIdFromCreate ? "!BENCHCREATE" : "!bench:bench.example";
  const events = new Map<string, RoomEvent>();
  let ts = 0;
  const add = (
    id: string,
    sender: string,
    type: string,
    sk: string,
    content: JsonObject,
    prev: string | undefined,
    before: StateIdMap,
  ): StateIdMap => {
    const keys = [stateKey("m.room.power_levels", ""), stateKey("m.room.member", sender)];
    if (!rv.roomIdFromCreate) keys.push(stateKey("m.room.create", ""));
    if (type === "m.room.member") {
      keys.push(stateKey("m.room.member", sk));
      if (content["membership"] === "join") keys.push(stateKey("m.room.join_rules", ""));
    }
    const auth = type === "m.room.create" ? [] : [...new Set(keys)].map((k) => before.get(k)).filter((x): x is string => !!x);
    ts += 1;
    const prevEvents = prev ? [prev] : [];
    events.set(id, {
      event_id: id,
      room_id: roomId,
      sender,
      type,
      state_key: sk,
      content,
      origin_server_ts: ts,
      depth: ts,
      prev_events: prevEvents,
      auth_events: auth,
      pdu: {
        ...(type === "m.room.create" && rv.roomIdFromCreate ? {} : { room_id: roomId }),
        sender,
        type,
        state_key: sk,
        content,
        origin_server_ts: ts,
        prev_events: prevEvents,
        auth_events: auth,
        depth: ts,
        hashes: { sha256: "" },
        signatures: {},
      },
    });
    before.set(stateKey(type, sk), id); // the branch's state, updated in place
    return before;
  };
  const users = (extra: Record<string, number>): JsonObject => (rv.privilegedCreators ? extra : { [ALICE]: 100, ...extra });

  let s: StateIdMap = new Map();
  let last: string | undefined;
  const step = (id: string, sender: string, type: string, sk: string, content: JsonObject) => {
    s = add(id, sender, type, sk, content, last, s);
    last = id;
  };
  step("$BENCHCREATE", ALICE, "m.room.create", "", rv.implicitCreator ? { room_version: rv.id } : { creator: ALICE, room_version: rv.id });
  step("$alice", ALICE, "m.room.member", ALICE, { membership: "join" });
  step("$pl0", ALICE, "m.room.power_levels", "", { users: users({}) });
  step("$jr", ALICE, "m.room.join_rules", "", { join_rule: "public" });
  const early = Math.max(2, Math.floor(n / 100));
  for (let i = 0; i < early; i++) step(`$early${i}`, `@e${i}:bench.example`, "m.room.member", `@e${i}:bench.example`, { membership: "join" });
  const fork = { s, last };

  const branch = (tag: string) => {
    s = new Map(fork.s);
    last = fork.last;
    step(`$pl${tag}`, ALICE, "m.room.power_levels", "", { users: users({ [`@${tag}0:bench.example`]: 10 }) });
    for (let i = 0; i < n / 2; i++) {
      const u = `@${tag}${i}:bench.example`;
      step(`$${tag}join${i}`, u, "m.room.member", u, { membership: "join" });
    }
    for (let i = 0; i < early; i += 2) {
      const u = `@e${i}:bench.example`;
      if (tag === "a") step(`$ban${i}`, ALICE, "m.room.member", u, { membership: "ban" });
      else step(`$rename${i}`, u, "m.room.member", u, { membership: "join", displayname: `E${i}` });
    }
    return s;
  };
  const a = branch("a");
  const b = branch("b");
  let conflictedKeys = 0;
  for (const k of new Set([...a.keys(), ...b.keys()])) if (a.get(k) !== b.get(k)) conflictedKeys++;
  return { rv, events, a, b, conflictedKeys };
}

export interface BenchResult {
  version: string;
  conflictedKeys: number;
  events: number;
  ms: number;
  resolvedSize: number;
  fetches: number;
}

export function benchStateRes(sizes: number[], versions = ["11", "12"], now: () => number = () => performance.now()): BenchResult[] {
  const out: BenchResult[] = [];
  for (const version of versions) {
    for (const n of sizes) {
      const f = buildMemberFork(n, version);
      let fetches = 0;
      const getEvent = (id: string) => {
        fetches++;
        return f.events.get(id);
      };
      const t0 = now();
      const r = resolveState(f.rv, [f.a, f.b], getEvent);
      const ms = now() - t0;
      out.push({ version, conflictedKeys: f.conflictedKeys, events: f.events.size, ms, resolvedSize: r.size, fetches });
    }
  }
  return out;
}

export function formatResults(rs: BenchResult[]): string {
  return rs
    .map(
      (r) =>
        `state-res room v${r.version}: ${r.conflictedKeys} conflicted keys, ${r.events} events → ` +
        `${r.ms.toFixed(1)} ms (resolved ${r.resolvedSize} keys, ${r.fetches} getEvent calls)`,
    )
    .join("\n");
}

// Standalone: `node /tmp/sr.mjs 1000 10000` after bundling (see the top of the file).
const argv = (globalThis as { process?: { argv?: string[] } }).process?.argv;
if (argv && /state-res|sr\.m?js/.test(argv[1] ?? "") && !argv.some((a) => a.includes("vitest"))) {
  const sizes = argv.slice(2).map(Number).filter((x) => x > 0);
  console.log(formatResults(benchStateRes(sizes.length ? sizes : [1000, 10000])));
}
