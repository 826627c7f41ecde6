// Shared by the federation benchmarks (run with `node --import tsx`, which lets this file load the
// protocol code in src/core): a fake homeserver on loopback whose users the benchmarks join into
// rooms, and the address of the workerd runtime behind a `wrangler dev` server.
import { createServer } from "node:http";
import { execSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const { freePort } = await import("../test/e2e/harness.ts");
const { generateSigningKey, signingKeyFromSeed, signJson } = await import("../src/core/signing.ts");

/** A homeserver on 127.0.0.1:<free port> with its own ed25519 key: it serves
 *  /_matrix/key/v2/server and /v1/version and accepts every transaction. Returns its name, key
 *  and the listening http.Server (to close). A benchmark that keeps its servers' state between
 *  runs passes the port and key seed of the first run: the events its users signed must stay
 *  verifiable under the same server name. */
export async function startFakeHomeserver(opts = {}) {
  const port = opts.port ?? (await freePort());
  const name = `127.0.0.1:${port}`;
  const key = opts.seed ? await signingKeyFromSeed("ed25519:bench", opts.seed) : await generateSigningKey("ed25519:bench");
  const keyResponse = () =>
    signJson({ server_name: name, verify_keys: { [key.keyId]: { key: key.publicKey } }, old_verify_keys: {}, valid_until_ts: Date.now() + 24 * 3600_000 }, name, key);
  const server = createServer(async (req, res) => {
    for await (const _ of req); // drain the body
    const send = (status, body) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "GET" && req.url === "/_matrix/key/v2/server") return send(200, await keyResponse());
    if (req.method === "PUT" && req.url.startsWith("/_matrix/federation/v1/send/")) return send(200, { pdus: {} });
    if (req.method === "GET" && req.url === "/_matrix/federation/v1/version") return send(200, { server: { name: "bench-fake" } });
    send(404, { errcode: "M_NOT_FOUND", error: "fake server" });
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { name, port, key, server };
}

/** The port of the workerd runtime's own listening socket behind `wrangler dev`'s proxy (for
 *  set-up traffic that the proxy drops under sustained load), or undefined. Not found by
 *  probing: an HTTP request to one of workerd's internal (capnp) sockets breaks that server
 *  ("incoming RPC message exceeds size limit"), ours or another's. wrangler's log
 *  (~/.config/.wrangler/logs) records, at each reload, the runtime's entry and inspector ports;
 *  ours is the entry whose two ports are both sockets of our server's process group. */
export function runtimePort(server) {
  const ours = processGroupOf(server);
  if (!ours) return undefined;
  const pids = new Set(execSync(`ps -o pid= -g ${ours.group}`).toString().split(/\s+/).filter(Boolean));
  const ports = new Set(ours.listening.filter((l) => pids.has(l.pid) && l.port !== String(server.port)).map((l) => l.port));
  const dir = join(homedir(), ".config/.wrangler/logs");
  const recent = existsSync(dir) ? readdirSync(dir).map((f) => join(dir, f)).filter((f) => Date.now() - statSync(f).mtimeMs < 3600_000) : [];
  for (const file of recent) {
    const reloads = readFileSync(file, "utf8").matchAll(/"userWorkerUrl":\{[^}]*"port":"(\d+)"\},"userWorkerInspectorUrl":\{[^}]*"port":"(\d+)"/g);
    for (const [, entry, inspector] of reloads) if (ports.has(entry) && ports.has(inspector)) return entry;
  }
  return undefined;
}

/** CPU time (ms, user + system, 10 ms resolution) the workerd runtime(s) of `server` have used
 *  so far: on a shared machine the difference across a request measures its work where the wall
 *  time and a sampling profile (which counts time the runtime waited for a core) do not. */
export function runtimeCpuMs(server) {
  const ours = processGroupOf(server);
  if (!ours) return null;
  const procs = execSync(`ps -o pid=,comm= -g ${ours.group}`).toString().trim().split("\n").map((l) => l.trim().split(/\s+/));
  let ticks = 0;
  for (const [pid, comm] of procs) {
    if (comm !== "workerd") continue;
    try {
      // Fields 14 and 15 (utime, stime), after the parenthesised command name.
      const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* exited */
    }
  }
  return ticks * 10;
}

/** The process group of `server` (started by the e2e harness in its own group: wrangler and its
 *  workerd processes), found from the process listening on its port, with the loopback sockets
 *  listening on the machine; undefined if nothing listens on its port. */
function processGroupOf(server) {
  const listening = [...execSync("ss -ltnpH").toString().matchAll(/127\.0\.0\.1:(\d+)\s.*?pid=(\d+)/g)].map((m) => ({ port: m[1], pid: m[2] }));
  const proxy = listening.find((l) => l.port === String(server.port));
  if (!proxy) return undefined;
  return { group: execSync(`ps -o pgid= -p ${proxy.pid}`).toString().trim(), listening };
}

/** Profile the Worker of `server` (wrangler dev) while `fn` runs, through wrangler's inspector:
 *  writes a .cpuprofile (open in Chrome DevTools) to `file` and returns the functions with the
 *  most self time. */
export async function profileWhile(server, file, fn, intervalUs = 500) {
  // wrangler's own inspector (scripts/start.mjs passes --inspector-port): the runtime's inspector
  // behind it takes one session, wrangler's.
  const ours = processGroupOf(server);
  const port = ours && /--inspector-port[= ](\d+)/.exec(execSync(`ps -o args= -g ${ours.group}`).toString())?.[1];
  if (!port) throw new Error("wrangler's --inspector-port was not found");
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  // (its proxy accepts only local Origins; Node's WebSocket takes undici's options)
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl, { headers: { origin: "http://localhost" } });
  await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = () => j(new Error("could not connect to wrangler's inspector")))));
  let id = 0;
  const waiting = new Map();
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && waiting.has(msg.id)) waiting.get(msg.id)(msg.result);
  };
  const send = (method, params = {}) => new Promise((r) => (waiting.set(++id, r), ws.send(JSON.stringify({ id, method, params }))));
  await send("Profiler.enable");
  await send("Profiler.setSamplingInterval", { interval: intervalUs });
  await send("Profiler.start");
  let result;
  try {
    result = await fn();
  } finally {
    const { profile } = await send("Profiler.stop");
    ws.close();
    writeFileSync(file, JSON.stringify(profile));
    // Self time per function (samples × interval), largest first.
    const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
    const self = new Map();
    const dt = profile.timeDeltas;
    profile.samples.forEach((nodeId, i) => {
      const f = byNode.get(nodeId).callFrame;
      const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
      self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0) / 1000);
    });
    const top = [...self].sort((x, y) => y[1] - x[1]).slice(0, 25);
    process.stderr.write(`CPU profile of ${server.serverName} in ${file}; self time (ms):\n${top.map(([k, v]) => `  ${v.toFixed(0).padStart(7)}  ${k}`).join("\n")}\n`);
    lastProfile = profile;
  }
  return result;
}

/** The profile profileWhile took last. */
let lastProfile;

/** Time (ms) of the last profile spent in each of `phases` (a function name, optionally with its
 *  file: "syncRoom reads.ts"), callees included, each sample counted once per phase, and the
 *  time the isolate was busy at all (samples not "(idle)"). */
export function phaseTimes(phases, profile = lastProfile) {
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const match = (frame, phase) => {
    const [name, file] = phase.split(" ");
    return frame.functionName === name && (!file || frame.url.endsWith(`/${file}`));
  };
  const out = Object.fromEntries(phases.map((p) => [p, 0]));
  let busy = 0;
  profile.samples.forEach((nodeId, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    if (byNode.get(nodeId).callFrame.functionName !== "(idle)") busy += dt;
    const hit = new Set();
    for (let id = nodeId; id !== undefined; id = parent.get(id)) {
      for (const p of phases) if (match(byNode.get(id).callFrame, p)) hit.add(p);
    }
    for (const p of hit) out[p] += dt;
  });
  return { busyMs: busy, phases: out };
}
