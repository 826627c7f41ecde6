// No import cycle among src/ and durable-objects/ (type-only imports included; issue 13).
// A plain Node check of the source files (no servers): it lives with the e2e tests because the
// unit project runs inside workerd, which has no file system to walk.
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error plain .mjs script without types
import { findCycles, importGraph, withoutExceptions } from "../../scripts/check-cycles.mjs";
// @ts-expect-error plain .mjs script without types
import { writeDoorViolations } from "../../scripts/check-write-door.mjs";

// Known exception (scripts/check-cycles.mjs withoutExceptions, for the direct run too): src/env.ts
// names the Durable Object classes for its binding types (`DurableObjectNamespace<RoomDO>` …),
// and the classes receive `Env`; its type-only imports of durable-objects/ are left out. Every
// other module takes the classes' types from the bindings (src/rpc/stubs.ts), never by
// importing a Durable Object module.

describe("import graph", () => {
  it("has no cycle among src/ and durable-objects/", () => {
    expect(findCycles(withoutExceptions(importGraph()))).toEqual([]);
  });

  it("`node scripts/check-cycles.mjs` run directly agrees (exit 0, the same exception)", () => {
    const root = path.resolve(import.meta.dirname, "../..");
    const out = execFileSync(process.execPath, [path.join(root, "scripts/check-cycles.mjs")], { encoding: "utf8", timeout: 60_000 });
    expect(out).toContain("no import cycles");
  });

  it("the exception covers only type-only imports in src/env.ts: a value import of a Durable Object module there is a cycle", () => {
    const g = new Map([["src/env.ts", ["durable-objects/room.ts"]], ["durable-objects/room.ts", ["src/env.ts"]]]);
    expect(findCycles(withoutExceptions(g, { "src/env.ts": 'import type { RoomDO } from "../durable-objects/room";' }))).toEqual([]);
    expect(findCycles(withoutExceptions(g, { "src/env.ts": 'import { RoomDO } from "../durable-objects/room";' }))).toEqual([["durable-objects/room.ts", "src/env.ts"]]);
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

// The room's write door (docs/architecture.md "The write door"): only durable-objects/room/writer.ts
// runs data-changing SQL on the RoomDO's storage, and there only through a WriteTx.
describe("room write door", () => {
  const root = path.resolve(import.meta.dirname, "../..");

  it("no module of the room changes rows around the writer", () => {
    expect(writeDoorViolations(root)).toEqual([]);
  });

  it("finds a write planted outside the writer, and one in the writer that skips the WriteTx", () => {
    const copy = mkdtempSync(path.join(tmpdir(), "write-door-"));
    try {
      cpSync(path.join(root, "durable-objects"), path.join(copy, "durable-objects"), { recursive: true });
      const remote = path.join(copy, "durable-objects/room/remote.ts");
      writeFileSync(remote, readFileSync(remote, "utf8") + '\nexport const planted = (sql: SqlStorage) => sql.exec("DELETE FROM extremities");\n');
      const writer = path.join(copy, "durable-objects/room/writer.ts");
      writeFileSync(writer, readFileSync(writer, "utf8") + '\nexport const skipped = (sql: SqlStorage) => sql.exec(`UPDATE meta SET value = ? WHERE key = ?`, 1, "x");\n');
      const found: string[] = writeDoorViolations(copy);
      expect(found).toHaveLength(2);
      expect(found[0]).toMatch(/^durable-objects\/room\/remote\.ts:\d+: data-changing SQL outside the write door/);
      expect(found[1]).toMatch(/^durable-objects\/room\/writer\.ts:\d+: data-changing SQL not run through tx\.exec/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });
});
