// Import cycles among src/ and durable-objects/ (type-only imports included): walks every
// `import ... from "./x"` / `export ... from "./x"` in the .ts files and reports each cycle once
// (as the strongly connected components of the import graph). Run directly
// (`node scripts/check-cycles.mjs`) or through test/e2e/import-cycles.test.ts; both leave out the
// one known exception (withoutExceptions).
import { readdirSync, readFileSync, existsSync, statSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "..");
const DIRS = ["src", "durable-objects"];

function tsFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...tsFiles(p));
    else if (p.endsWith(".ts") && !p.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

function resolveImport(from, spec) {
  if (!spec.startsWith(".")) return null;
  const base = path.resolve(path.dirname(from), spec);
  for (const cand of [base, `${base}.ts`, path.join(base, "index.ts")]) {
    if (existsSync(cand) && statSync(cand).isFile()) return cand;
  }
  return null;
}

/** Module graph: relative path → relative paths it imports (values and types alike). */
export function importGraph(root = ROOT) {
  const graph = new Map();
  const files = DIRS.flatMap((d) => tsFiles(path.join(root, d)));
  const re = /(?:^|\n)\s*(?:import|export)\s+(?:type\s+)?(?:[^;'"]*?\s+from\s+)?["']([^"']+)["']/g;
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    const deps = new Set();
    for (const m of text.matchAll(re)) {
      const target = resolveImport(file, m[1]);
      if (target) deps.add(path.relative(root, target));
    }
    graph.set(path.relative(root, file), [...deps].sort());
  }
  return graph;
}

/** The known exception: src/env.ts names the Durable Object classes for its binding types
 *  (`DurableObjectNamespace<RoomDO>` …) and the classes receive `Env`. Its type-only imports of
 *  durable-objects/ modules are left out of `graph` (a copy); a value import there stays, as it
 *  would be a cycle at run time. `texts`: file texts by relative path (default: read from disk). */
export function withoutExceptions(graph, texts = {}, root = ROOT) {
  const file = "src/env.ts";
  const out = new Map(graph);
  const deps = graph.get(file);
  if (!deps) return out;
  const text = texts[file] ?? readFileSync(path.join(root, file), "utf8");
  const valueImported = new Set();
  for (const m of text.matchAll(/(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^;'"]*?\s+from\s+)?["']([^"']+)["']/g)) {
    if (!m[2]) valueImported.add(path.normalize(path.join("src", m[3])));
  }
  const typeOnly = (d) => d.startsWith("durable-objects/") && ![d, d.replace(/\.ts$/, ""), d.replace(/\/index\.ts$/, "")].some((x) => valueImported.has(x));
  out.set(file, deps.filter((d) => !typeOnly(d)));
  return out;
}

/** Strongly connected components with more than one module (or a self-import): the cycles. */
export function findCycles(graph) {
  let index = 0;
  const idx = new Map(), low = new Map(), onStack = new Set(), stack = [], out = [];
  const visit = (v) => {
    idx.set(v, index); low.set(v, index); index++;
    stack.push(v); onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v), low.get(w))); }
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do { w = stack.pop(); onStack.delete(w); comp.push(w); } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const cycles = findCycles(withoutExceptions(importGraph()));
  for (const c of cycles) console.log(`cycle: ${c.join(" ↔ ")}`);
  console.log(cycles.length === 0 ? "no import cycles" : `${cycles.length} cycle(s)`);
  process.exitCode = cycles.length === 0 ? 0 : 1;
}
