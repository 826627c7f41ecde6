// Bundle size check (part of `npm test`): builds the Worker as `wrangler deploy` would, without
// deploying (`--dry-run --outdir`), and fails if the compressed upload exceeds the Workers size
// limit (3 MiB after gzip on the Free plan; 10 MiB on Paid). Runs offline.
//
//   npm run check:bundle                               # limit 3 MiB
//   BUNDLE_LIMIT_BYTES=500000 npm run check:bundle     # another limit (e.g. to see it fail)
// (through npm so that node_modules/.bin/node, Node 24, runs it: wrangler needs Node >= 22)
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";

const root = path.resolve(import.meta.dirname, "..");
const limit = Number(process.env.BUNDLE_LIMIT_BYTES ?? 3 * 1024 * 1024);
const outdir = mkdtempSync(path.join(tmpdir(), "lattice-bundle-"));
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;

try {
  const wrangler = path.join(root, "node_modules", "wrangler", "bin", "wrangler.js");
  const run = spawnSync(process.execPath, [wrangler, "deploy", "--dry-run", "--outdir", outdir], {
    cwd: root,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
    encoding: "utf8",
    timeout: 300_000,
  });
  if (run.status !== 0) {
    console.error(run.stdout, run.stderr);
    throw new Error(`wrangler deploy --dry-run failed (${run.error?.message ?? `exit ${run.status}`})`);
  }
  // What is uploaded: every module (JavaScript, WASM, ...), not source maps or the README.
  let raw = 0;
  let gzip = 0;
  const parts = [];
  for (const name of readdirSync(outdir)) {
    if (name.endsWith(".map") || name === "README.md") continue;
    const bytes = readFileSync(path.join(outdir, name));
    const z = gzipSync(bytes).byteLength;
    raw += bytes.byteLength;
    gzip += z;
    parts.push(`${name.replace(/^[0-9a-f]{40}-/, "")} ${kib(z)}`);
  }
  const wranglerSays = /Total Upload: ([\d.]+ KiB) \/ gzip: ([\d.]+ KiB)/.exec(run.stdout)?.slice(1).join(" / gzip ");
  console.log(`bundle size: ${kib(raw)} uploaded, ${kib(gzip)} gzip (${parts.join(", ")}); limit ${kib(limit)} gzip` + (wranglerSays ? `; wrangler: ${wranglerSays}` : ""));
  if (gzip > limit) throw new Error(`${kib(gzip)} gzip is over the limit of ${kib(limit)}`);
} catch (e) {
  console.error(`bundle size: ${e.message}`);
  process.exitCode = 1;
} finally {
  rmSync(outdir, { recursive: true, force: true });
}
