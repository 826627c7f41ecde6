// No import cycle among src/ and durable-objects/ (type-only imports included; issue 13).
// A plain Node check of the source files (no servers): it lives with the e2e tests because the
// unit project runs inside workerd, which has no file system to walk.
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error plain .mjs script without types
import { findCycles, importGraph } from "../../scripts/check-cycles.mjs";

// Known exception: src/env.ts names the Durable Object classes for its binding types
// (`DurableObjectNamespace<RoomDO>` …), and the classes receive `Env`; its edges to
// durable-objects/ are left out below. Every other module takes
// the classes' types from the bindings (src/rpc/stubs.ts), never by importing a Durable Object
// module.

describe("import graph", () => {
  it("has no cycle among src/ and durable-objects/", () => {
    const graph: Map<string, string[]> = importGraph();
    graph.set("src/env.ts", (graph.get("src/env.ts") ?? []).filter((m) => !m.startsWith("durable-objects/")));
    expect(findCycles(graph)).toEqual([]);
  });

  it("routes and services import no Durable Object class module (RPC types are in src/rpc/)", () => {
    const graph: Map<string, string[]> = importGraph();
    // Pure helpers that live next to the classes (room/sync-view.ts, room/search.ts, …) may be shared.
    const root = path.resolve(import.meta.dirname, "../..");
    const isClassModule = (m: string) => m.startsWith("durable-objects/") && /extends DurableObject\b/.test(readFileSync(path.join(root, m), "utf8"));
    const offenders: string[] = [];
    for (const [from, deps] of graph) {
      if (!from.startsWith("src/") || from === "src/env.ts" || from === "src/index.ts") continue;
      for (const d of deps) if (isClassModule(d)) offenders.push(`${from} -> ${d}`);
    }
    expect(offenders).toEqual([]);
  });

  it("finds a cycle when there is one (the check itself works)", () => {
    const g = new Map([["a.ts", ["b.ts"]], ["b.ts", ["c.ts"]], ["c.ts", ["a.ts"]], ["d.ts", ["a.ts"]]]);
    expect(findCycles(g)).toEqual([["a.ts", "b.ts", "c.ts"]]);
  });
});
