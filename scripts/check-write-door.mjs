// The room's write door (docs/architecture.md "The write door"): only durable-objects/room/writer.ts
// changes the RoomDO's rows. This check reads every module of the room (durable-objects/room.ts
// and durable-objects/room/*.ts) and reports
//   - a string literal holding data-changing SQL (INSERT, UPDATE, DELETE, REPLACE) outside the
//     writer, unless it is a D1 statement (`.prepare(`: the Worker's database, not the room's
//     storage) or one of the EXCEPTIONS below;
//   - in the writer, such a literal that is not the first argument of `tx.exec(` (a WriteTx, which
//     only the writer creates inside its transaction);
//   - `deleteAll(` outside the writer.
// Run directly (`node scripts/check-write-door.mjs [root]`) or through
// test/e2e/import-cycles.test.ts.
import { readdirSync, readFileSync, existsSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "..");
const WRITER = "durable-objects/room/writer.ts";

/** Writes outside the door, each with its reason. `contains` must appear in the SQL literal. */
export const EXCEPTIONS = [
  {
    file: "durable-objects/room/fanout.ts",
    contains: "'hub_done'",
    why: "the sync-hub delivery watermark: bookkeeping of deliveries, not room data; one atomic upsert, and queueing it behind writes would hold up every delivery",
  },
  {
    file: "durable-objects/room/search.ts",
    contains: "INTO search_fts",
    why: "the full-text index: derived from the events table and rebuilt by catching up (on the read path), never read as room data",
  },
  {
    file: "durable-objects/room/search.ts",
    contains: "'search_rowid'",
    why: "the full-text index's catch-up watermark (see search_fts)",
  },
  {
    file: "durable-objects/room/schema.ts",
    contains: "INSERT INTO extremities_w",
    why: "rebuilding the extremities table as WITHOUT ROWID when a room from before it starts (openSchema): the same rows, copied once with the schema change",
  },
  {
    file: "durable-objects/room/schema.ts",
    contains: "('member_counts', ?)",
    why: "the member counts of a room from before the writer kept them, counted once when it starts with the schema change (openSchema); every later change is the writer's (applyCurrentState)",
  },
  {
    file: "durable-objects/room/schema.ts",
    contains: "('schema', ?)",
    why: "the schema version, recorded with the CREATE statements it stands for when a room starts (openSchema): bookkeeping of the schema, not room data",
  },
];

const WRITE_SQL = /\b(INSERT|UPDATE|DELETE|REPLACE)\b/;

/** The room's modules, relative to root. */
export function roomModules(root = ROOT) {
  const dir = path.join(root, "durable-objects/room");
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => `durable-objects/room/${f}`) : [];
  return ["durable-objects/room.ts", ...files.sort()];
}

/** String literals of a TypeScript source with their offsets (comments skipped; a template
 *  literal is taken whole, `${…}` included). */
export function stringLiterals(text) {
  const out = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "/" && text[i + 1] === "/") {
      i = text.indexOf("\n", i);
      if (i < 0) break;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end < 0 ? text.length : end + 2;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) {
        if (text[j] === "\\") j++;
        else if (c !== "`" && text[j] === "\n") break;
        j++;
      }
      out.push({ start: i, value: text.slice(i + 1, j) });
      i = j + 1;
    } else i++;
  }
  return out;
}

/** Violations of the write door in the room's modules: "file:line: reason". */
export function writeDoorViolations(root = ROOT) {
  const out = [];
  for (const file of roomModules(root)) {
    const text = readFileSync(path.join(root, file), "utf8");
    const lineOf = (at) => text.slice(0, at).split("\n").length;
    for (const lit of stringLiterals(text)) {
      if (!WRITE_SQL.test(lit.value)) continue;
      const before = text.slice(Math.max(0, lit.start - 120), lit.start);
      if (/\.prepare\(\s*$/.test(before)) continue; // D1, not the room's storage
      if (file === WRITER) {
        if (!/\btx\.exec(<[^>]*>)?\(\s*$/.test(before)) out.push(`${file}:${lineOf(lit.start)}: data-changing SQL not run through tx.exec (a WriteTx)`);
        continue;
      }
      if (EXCEPTIONS.some((x) => x.file === file && lit.value.includes(x.contains))) continue;
      out.push(`${file}:${lineOf(lit.start)}: data-changing SQL outside the write door (${WRITER})`);
    }
    if (file !== WRITER) {
      for (const m of text.matchAll(/\bdeleteAll\(/g)) out.push(`${file}:${lineOf(m.index)}: deleteAll outside the write door`);
    }
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const found = writeDoorViolations(process.argv[2] ? path.resolve(process.argv[2]) : ROOT);
  for (const v of found) console.log(v);
  console.log(found.length ? `${found.length} write-door violation(s)` : "write door: no violations");
  process.exit(found.length ? 1 : 0);
}
