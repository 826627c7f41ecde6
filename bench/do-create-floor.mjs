// The runtime's floor for createRoom (issue 21): under `wrangler dev` with the flags `npm start`
// uses (scripts/start.mjs), a minimal Worker (bench/do-floor/) answers sequential requests of
// each kind below; prints p50/p90, workerd CPU per request (/proc) and, with --fsyncs, the
// fsync-family calls per request (`perf stat`, as bench/send.mjs --fsyncs). Kinds, interleaved
// in rounds so the machine's load falls on all alike:
//   noop            the Worker answers by itself (no Durable Object)
//   existing-noop   an RPC to an existing Durable Object that does nothing
//   existing        an RPC to an existing SQLite-backed Durable Object that writes one row
//   new-noop        an RPC to a brand-new Durable Object that does nothing (the object is made)
//   new             an RPC to a brand-new SQLite-backed Durable Object that writes one row
//   d1              one D1 batch writing one row
//   create-shape    createRoom's I/O with none of its work: a D1 read (the token lookup), a
//                   brand-new object writing one row, then from it one D1 batch and one row
//                   in another, existing object (the creator's sync hub), in that order
//
// node_modules/.bin/node bench/do-create-floor.mjs [requests per kind per round] [--rounds N] [--fsyncs]
//   [--profile KIND FILE]: a V8 CPU profile of the Worker isolate over 40 requests of KIND
// (state in os.tmpdir(): TMPDIR=/dev/shm for tmpfs). Loopback only; the server is stopped by its
// process group.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fsyncsWhile, percentile, processGroupCpuMs } from "./util.mjs";
import { freePort } from "../test/e2e/harness.ts";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(name);
  return i >= 0 && args.splice(i, 1).length > 0;
};
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args.splice(i, 2)[1]) : fallback;
};
const withFsyncs = flag("--fsyncs");
const profileAt = args.indexOf("--profile");
const profile = profileAt >= 0 ? { kind: args[profileAt + 1], file: args[profileAt + 2] } : undefined;
if (profile) args.splice(profileAt, 3);
const rounds = Math.min(option("--rounds", 3), 20);
const perRound = Math.min(Number(args[0] ?? 40), 1000);
const KINDS = ["noop", "existing-noop", "existing", "new-noop", "new", "d1", "create-shape"];

const port = await freePort();
const inspectorPort = await freePort();
const state = mkdtempSync(path.join(tmpdir(), "do-floor-"));
const nodeBin = path.join(root, "node_modules", ".bin", "node");
const wranglerJs = path.join(root, "node_modules", "wrangler", "bin", "wrangler.js");
const child = spawn(
  nodeBin,
  [wranglerJs, "dev", "--local", "--show-interactive-dev-session=false", "-c", path.join(root, "bench/do-floor/wrangler.toml"),
    "--port", String(port), "--ip", "127.0.0.1", "--persist-to", state, "--inspector-port", String(inspectorPort)],
  { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { X_LOCAL_OBSERVABILITY: "false", ...process.env, WRANGLER_SEND_METRICS: "false", CI: process.env.CI ?? "" } },
);
let out = "";
child.stdout.on("data", (d) => (out += d));
child.stderr.on("data", (d) => (out += d));
const pgid = child.pid;
const base = `http://127.0.0.1:${port}`;

async function stop() {
  const alive = () => {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (const [sig, wait] of [["SIGTERM", 5000], ["SIGKILL", 5000]]) {
    try {
      process.kill(-pgid, sig);
    } catch {}
    const until = Date.now() + wait;
    while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    if (!alive()) break;
  }
  rmSync(state, { recursive: true, force: true });
}

async function hit(kind, i) {
  const res = await fetch(`${base}/${kind}?v=${i}`);
  const text = await res.text();
  if (!res.ok) throw new Error(`${kind}: ${res.status} ${text}`);
}

try {
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the floor Worker did not start:\n${out}`);
    try {
      if ((await fetch(`${base}/noop`)).ok) break;
    } catch {}
    await new Promise((r) => setTimeout(r, 250));
  }
  for (const kind of KINDS) for (let i = 0; i < 5; i++) await hit(kind, i); // warm-up
  const times = Object.fromEntries(KINDS.map((k) => [k, []]));
  const cpu = Object.fromEntries(KINDS.map((k) => [k, 0]));
  for (let r = 0; r < rounds; r++) {
    for (const kind of KINDS) {
      const c0 = processGroupCpuMs(pgid).workerd;
      for (let i = 0; i < perRound; i++) {
        const t = performance.now();
        await hit(kind, i);
        times[kind].push(performance.now() - t);
      }
      cpu[kind] += processGroupCpuMs(pgid).workerd - c0;
    }
  }
  const fsyncs = {};
  if (withFsyncs) {
    for (const kind of KINDS) {
      const n = 20;
      fsyncs[kind] = (await fsyncsWhile(pgid, async () => { for (let i = 0; i < n; i++) await hit(kind, i); })).calls / n;
    }
  }
  if (profile) {
    const { profileWhile } = await import("./loopback-peers.mjs");
    await profileWhile({ port, serverName: `floor:${port}` }, profile.file, async () => {
      for (let i = 0; i < 40; i++) await hit(profile.kind, i);
    });
  }
  const where = tmpdir().startsWith("/dev/shm") ? "tmpfs" : "disk";
  console.log(`runtime floor under wrangler dev (${where}, ${rounds} rounds × ${perRound} requests per kind):`);
  for (const kind of KINDS) {
    const t = times[kind];
    const f = fsyncs[kind] !== undefined ? `, ${fsyncs[kind].toFixed(2)} fsyncs` : "";
    console.log(`  ${kind.padEnd(14)} p50 ${percentile(t, 50).toFixed(2)} ms, p90 ${percentile(t, 90).toFixed(2)} ms, workerd CPU ${(cpu[kind] / t.length).toFixed(2)} ms${f}`);
  }
} finally {
  await stop();
}
