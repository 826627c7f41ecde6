// Soak (issue 14, "Across the server"): N minutes of mixed traffic from many users against a
// server started like `npm start`, then proof that nothing was lost or duplicated and that the
// workerd process's memory stayed flat.
//
//   node_modules/.bin/node --import tsx bench/soak.mjs [--minutes 10] [--members 6] [--churners 6] [--rooms 3] [--direct]
//
// (Node 24 from node_modules/.bin: the e2e harness it starts the server with is TypeScript.)
// The server runs on a free loopback port, in its own process group, with its own temporary state
// directory (`npm start`'s scripts/start.mjs via test/e2e/harness.ts) and is stopped by PID.
//
// Traffic (every loop is bounded by the deadline and by an iteration cap):
//  - members: joined to every room for the whole run; send messages, typing, to-device, media
//    upload + download (bytes compared), and run a /sync long-poll loop each;
//  - churners: join and leave rooms (one room at a time), send while joined, to-device, media,
//    and their own /sync loop.
// Every send and to-device message carries a transaction ID; a failed request is retried with
// the same ID (so a duplicate would show), and one in 20 is deliberately sent twice.
//
// (--only KIND: members do only that kind, no churners; --direct: see below.)
// Checks after the deadline (the syncs are drained first):
//  - /messages of each room (paged backwards to the start) holds every event the bench sent
//    exactly once;
//  - every member's /sync stream of each room, after its first sync, equals /messages after the
//    same point: same events, each once, same order;
//  - every churner's stream, between each of its joins and the matching leave, equals /messages
//    between them;
//  - every to-device message reached its recipient exactly once;
//  - no 5xx and no network error; any unexpected 4xx is listed.
// Memory: VmRSS of each workerd process of the server's process group from /proc every 5 s;
// start / peak / end and the least-squares slope (MiB per minute) over the run.
import { createHash, randomBytes } from "node:crypto";
import { execSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { percentile, registerBenchUser } from "./util.mjs";

const opt = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const MINUTES = Math.min(opt("minutes", 10), 120);
const MEMBERS = opt("members", 6);
/** --only send|media|to-device|typing: members do only that (with their /sync loops), no churners:
 *  to see which kind of traffic a memory growth follows. */
const ONLY = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1] : undefined;
const CHURNERS = ONLY ? 0 : opt("churners", 6);
const ROOMS = opt("rooms", 3);
const RSS_EVERY_MS = 5000;
const enc = encodeURIComponent;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(new Date().toISOString().slice(11, 19), ...a);

const { startServer, freePort } = await import("../test/e2e/harness.ts");
const port = await freePort();
const server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" }, { port });
// --direct: the traffic goes to the workerd runtime's own socket, past wrangler's dev proxy, which
// under sustained load on a busy machine ends the whole dev server (an empty "✘ [ERROR]" in its
// output; docs/benchmarks.md, "Sync"). The proxy is a development relay only, not Lattice.
const DIRECT = process.argv.includes("--direct");
let base = server.baseUrl;
if (DIRECT) {
  const { runtimePort } = await import("./loopback-peers.mjs");
  const rp = runtimePort(server);
  if (!rp) throw new Error("--direct: the runtime's port was not found in wrangler's log");
  base = `http://127.0.0.1:${rp}`;
}
log(`server on ${server.baseUrl}${DIRECT ? `, traffic direct to the runtime at ${base}` : ""}`);

// -- workerd processes and their RSS --------------------------------------------------------------
/** The workerd processes of the server's process group (the one listening on our port is
 *  wrangler's dev proxy; the other runs Lattice: the Worker and every Durable Object). */
function workerdProcesses() {
  const ss = execSync("ss -ltnpH").toString();
  const proxyPid = new RegExp(`127\\.0\\.0\\.1:${port}\\s.*?pid=(\\d+)`).exec(ss)?.[1];
  if (!proxyPid) return [];
  const pgid = execSync(`ps -o pgid= -p ${proxyPid}`).toString().trim();
  return execSync(`ps -o pid=,comm= -g ${pgid}`)
    .toString()
    .trim()
    .split("\n")
    .map((l) => l.trim().split(/\s+/))
    .filter(([, comm]) => comm === "workerd")
    .map(([pid]) => ({ pid, role: pid === proxyPid ? "proxy" : "runtime" }));
}
const procs = workerdProcesses();
log(`workerd processes: ${procs.map((p) => `${p.role} ${p.pid}`).join(", ")}`);
const rssSamples = Object.fromEntries(procs.map((p) => [p.role, []]));
function rssNow(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024;
}
function sampleRss() {
  const t = performance.now();
  for (const p of procs) {
    try {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, "utf8"))[1]);
      rssSamples[p.role].push({ t, mib: kb / 1024 });
    } catch {}
  }
}
const loads = [];

/** The Worker's JS heap through wrangler's inspector (scripts/start.mjs passes --inspector-port):
 *  tells growth of the JS heap apart from the rest of the process. */
async function connectInspector() {
  try {
    const proxyPid = procs.find((p) => p.role === "proxy")?.pid;
    const pgid = execSync(`ps -o pgid= -p ${proxyPid}`).toString().trim();
    const inspectorPort = /--inspector-port[= ](\d+)/.exec(execSync(`ps -o args= -g ${pgid}`).toString())?.[1];
    const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
    const ws = new WebSocket(targets[0].webSocketDebuggerUrl, { headers: { origin: "http://localhost" } });
    await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = () => j(new Error("inspector")))));
    let id = 0;
    const waiting = new Map();
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.id && waiting.has(msg.id)) waiting.get(msg.id)(msg.result);
    };
    const send = (method, params = {}) =>
      Promise.race([new Promise((r) => (waiting.set(++id, r), ws.send(JSON.stringify({ id, method, params })))), sleep(10_000)]);
    return { send, close: () => ws.close() };
  } catch (e) {
    log(`no inspector (${e.message}): JS heap not sampled`);
    return undefined;
  }
}
const inspector = await connectInspector();
const heapSamples = [];
async function sampleHeap() {
  const h = await inspector?.send("Runtime.getHeapUsage");
  if (h?.usedSize) heapSamples.push({ t: performance.now(), mib: h.usedSize / 2 ** 20, total: h.totalSize / 2 ** 20 });
}

// -- requests, counted by kind ----------------------------------------------------------------------
const stats = new Map(); // kind -> { n, ms: [], errors: Map(status -> n) }
const problems = [];
function stat(kind) {
  if (!stats.has(kind)) stats.set(kind, { n: 0, ms: [], errors: new Map() });
  return stats.get(kind);
}
/** One request; retried (same URL and body: idempotent by transaction ID) on a network error or
 *  5xx, at most 3 times. Returns { status, body }. `expect` lists acceptable non-2xx statuses. */
async function req(kind, method, path, token, body, { raw, expect = [], timeoutMs = 60_000 } = {}) {
  const s = stat(kind);
  for (let attempt = 0; ; attempt++) {
    const t = performance.now();
    let status;
    let out;
    try {
      const headers = { authorization: `Bearer ${token}` };
      if (body !== undefined && !raw) headers["content-type"] = "application/json";
      if (raw) headers["content-type"] = "application/octet-stream";
      const res = await fetch(`${base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      status = res.status;
      out = raw === "download" || (kind === "media download" && res.ok) ? Buffer.from(await res.arrayBuffer()) : await res.json().catch(() => null);
    } catch (e) {
      status = `network (${e.name})`;
    }
    s.n++;
    s.ms.push(performance.now() - t);
    (s.at ??= []).push(t);
    const ok = typeof status === "number" && (status < 300 || expect.includes(status));
    if (ok) return { status, body: out };
    s.errors.set(status, (s.errors.get(status) ?? 0) + 1);
    problems.push(`${kind} ${method} ${path.slice(0, 90)} -> ${status} ${JSON.stringify(out ?? "").slice(0, 200)}`);
    if (typeof status !== "number") noteNetworkError();
    const retriable = typeof status !== "number" || status >= 500;
    if (!retriable || attempt >= 3) return { status, body: out };
    await sleep(500 * (attempt + 1));
  }
}

/** The server went away (wrangler dev exiting, or its processes killed): stop the traffic, keep
 *  its output, and report rather than send thousands of failing requests. */
let serverGone;
let networkErrors = 0;
function noteNetworkError() {
  if (++networkErrors % 20 !== 0 || serverGone) return;
  const alive = procs.every((p) => {
    try {
      readFileSync(`/proc/${p.pid}/status`);
      return true;
    } catch {
      return false;
    }
  });
  if (!alive) {
    serverGone = { atMin: (performance.now() - (globalThis.soakStarted ?? 0)) / 60_000 };
    const file = path.join(tmpdir(), `soak-server-${port}.log`);
    writeFileSync(file, server.output());
    log(`the server's workerd processes are gone (${procs.map((p) => p.pid).join(", ")}); its output is in ${file}; stopping`);
  }
}

// -- set-up ---------------------------------------------------------------------------------------
const tag = Date.now().toString(36);
const users = [];
for (let i = 0; i < MEMBERS + CHURNERS; i++) {
  const u = await registerBenchUser(base, `soak${tag}${i < MEMBERS ? "m" : "c"}${i}`);
  u.kind = i < MEMBERS ? "member" : "churner";
  u.rooms = new Map(); // roomId -> [event ids seen in /sync, in order]
  u.limited = 0; // timelines that came `limited` where they must not have
  u.toDevice = new Map(); // message id -> times received
  u.joinedRoom = null; // churners: the room it is in
  u.memberships = new Map(); // event id -> membership, of its own member events seen in /sync
  users.push(u);
}
const members = users.filter((u) => u.kind === "member");
const churners = users.filter((u) => u.kind === "churner");
const rooms = [];
for (let r = 0; r < ROOMS; r++) {
  const { body } = await req("createRoom", "POST", "/_matrix/client/v3/createRoom", members[0].token, { preset: "public_chat", name: `soak ${r}` });
  rooms.push(body.room_id);
  for (const m of members.slice(1)) await req("join", "POST", `/_matrix/client/v3/rooms/${enc(body.room_id)}/join`, m.token, {});
}
log(`${users.length} users, ${rooms.length} rooms`);

/** Everything the bench sent: room -> event ids; to-device: recipient -> Set of message ids. */
const sent = new Map(rooms.map((r) => [r, new Set()]));
const toDeviceSent = new Map(users.map((u) => [u.userId, new Set()]));
const FILTER = enc(JSON.stringify({ room: { timeline: { limit: 200 } }, presence: { not_types: ["*"] } }));

// -- the /sync loop of every user -----------------------------------------------------------------
let stopSyncs = false;
/** First sync: where each user's stream starts (its rooms' timelines are history, not stream). */
for (const u of users) {
  const { body } = await req("sync initial", "GET", `/_matrix/client/v3/sync?filter=${FILTER}&timeout=0`, u.token);
  u.since = body.next_batch;
  u.startAfter = new Map(); // roomId -> last event id of the initial sync's timeline
  for (const [roomId, room] of Object.entries(body.rooms?.join ?? {})) u.startAfter.set(roomId, room.timeline.events.at(-1)?.event_id);
}
function absorb(u, body) {
  for (const section of ["join", "leave"]) {
    for (const [roomId, room] of Object.entries(body.rooms?.[section] ?? {})) {
      if (!u.rooms.has(roomId)) u.rooms.set(roomId, []);
      const stream = u.rooms.get(roomId);
      const evs = room.timeline?.events ?? [];
      // A churner's timeline may be limited when it (re)joins (the room's history before the
      // join); anywhere else a limited timeline would be a gap in the stream.
      const joinsHere = evs.some((e) => e.type === "m.room.member" && e.state_key === u.userId && e.content.membership === "join");
      if (room.timeline?.limited && !(u.kind === "churner" && joinsHere)) u.limited++;
      for (const e of evs) {
        stream.push(e.event_id);
        if (e.type === "m.room.member" && e.state_key === u.userId) u.memberships.set(e.event_id, e.content.membership);
      }
    }
  }
  for (const e of body.to_device?.events ?? []) {
    const id = e.content?.soak_id;
    if (id) u.toDevice.set(id, (u.toDevice.get(id) ?? 0) + 1);
  }
}
async function syncLoop(u) {
  for (let i = 0; i < 100_000 && !stopSyncs && !serverGone; i++) {
    const { status, body } = await req("sync (long-poll 5 s)", "GET", `/_matrix/client/v3/sync?filter=${FILTER}&timeout=5000&since=${enc(u.since)}`, u.token);
    if (status !== 200) {
      await sleep(1000);
      continue;
    }
    absorb(u, body);
    u.since = body.next_batch;
  }
}

// -- actions --------------------------------------------------------------------------------------
let txn = 0;
const media = []; // { uri, sha }
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];
async function sendMessage(u, roomId) {
  const id = `t${tag}-${++txn}`;
  const path = `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${id}`;
  const content = { msgtype: "m.text", body: `soak ${id}` };
  const { status, body } = await req("send", "PUT", path, u.token, content);
  if (status !== 200) return;
  sent.get(roomId).add(body.event_id);
  if (txn % 20 === 0) {
    // The same transaction again: must answer with the same event, and add nothing.
    const again = await req("send (txn repeat)", "PUT", path, u.token, content);
    if (again.status === 200 && again.body.event_id !== body.event_id) problems.push(`txn repeat ${id} gave ${again.body.event_id}, first ${body.event_id}`);
  }
}
async function sendToDevice(u) {
  const to = pick(users.filter((x) => x !== u));
  const id = `d${tag}-${++txn}`;
  const path = `/_matrix/client/v3/sendToDevice/org.lattice.soak/${id}`;
  const payload = { messages: { [to.userId]: { [to.deviceId]: { soak_id: id } } } };
  const { status } = await req("to-device", "PUT", path, u.token, payload);
  if (status !== 200) return;
  toDeviceSent.get(to.userId).add(id);
  if (txn % 20 === 0) await req("to-device (txn repeat)", "PUT", path, u.token, payload);
}
async function typing(u, roomId) {
  await req("typing", "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(u.userId)}`, u.token, { typing: Math.random() < 0.7, timeout: 5000 });
}
async function mediaRoundTrip(u) {
  const bytes = randomBytes(4096 + Math.floor(Math.random() * 60_000));
  const sha = createHash("sha256").update(bytes).digest("hex");
  const { status, body } = await req("media upload", "POST", `/_matrix/media/v3/upload?filename=soak.bin`, u.token, bytes, { raw: true });
  if (status !== 200) return;
  media.push({ uri: body.content_uri, sha });
  // Download something (often another user's upload) and compare its bytes.
  const m = pick(media);
  const [server, id] = m.uri.slice("mxc://".length).split("/");
  const got = await req("media download", "GET", `/_matrix/client/v1/media/download/${enc(server)}/${enc(id)}`, u.token);
  if (got.status === 200 && createHash("sha256").update(got.body).digest("hex") !== m.sha) problems.push(`media ${m.uri}: downloaded bytes differ`);
}
async function joinOrLeave(u) {
  if (u.joinedRoom) {
    const roomId = u.joinedRoom;
    const { status } = await req("leave", "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, u.token, {});
    if (status === 200) u.joinedRoom = null;
  } else {
    const roomId = pick(rooms);
    const { status } = await req("join", "POST", `/_matrix/client/v3/rooms/${enc(roomId)}/join`, u.token, {});
    if (status === 200) u.joinedRoom = roomId;
  }
}
async function actor(u, deadline) {
  for (let i = 0; i < 100_000 && performance.now() < deadline && !serverGone; i++) {
    const x = Math.random();
    if (ONLY) {
      if (ONLY === "send") await sendMessage(u, pick(rooms));
      else if (ONLY === "media") await mediaRoundTrip(u);
      else if (ONLY === "to-device") await sendToDevice(u);
      else await typing(u, pick(rooms));
    } else if (u.kind === "member") {
      if (x < 0.55) await sendMessage(u, pick(rooms));
      else if (x < 0.7) await typing(u, pick(rooms));
      else if (x < 0.88) await sendToDevice(u);
      else await mediaRoundTrip(u);
    } else {
      if (x < 0.25) await joinOrLeave(u);
      else if (x < 0.6 && u.joinedRoom) await sendMessage(u, u.joinedRoom);
      else if (x < 0.8) await sendToDevice(u);
      else if (x < 0.9 && u.joinedRoom) await typing(u, u.joinedRoom);
      else await mediaRoundTrip(u);
    }
    await sleep(100 + Math.random() * 400); // think time
  }
  // Leave the churner out of its room so every window closes.
  if (u.joinedRoom && !serverGone) await joinOrLeave(u);
}

// -- run ------------------------------------------------------------------------------------------
const started = performance.now();
globalThis.soakStarted = started;
const deadline = started + MINUTES * 60_000;
sampleRss();
await sampleHeap();
loads.push(loadavg()[0]);
const sampler = setInterval(() => {
  sampleRss();
  void sampleHeap();
  loads.push(loadavg()[0]);
}, RSS_EVERY_MS);
let lastReport = started;
const progress = setInterval(() => {
  const n = [...stats.values()].reduce((a, s) => a + s.n, 0);
  const rt = rssSamples.runtime?.at(-1)?.mib;
  log(`${((performance.now() - started) / 60_000).toFixed(1)} min: ${n} requests, ${problems.length} problems, runtime RSS ${rt?.toFixed(0)} MiB, load ${loadavg()[0].toFixed(1)}`);
  lastReport = performance.now();
}, 60_000);
const syncs = users.map((u) => syncLoop(u));
await Promise.all(users.map((u) => actor(u, deadline)));
const trafficSecs = (performance.now() - started) / 1000;
log("traffic stopped; draining syncs");

// Drain: until every member's stream has every sent event (or 90 s).
const drainUntil = performance.now() + 90_000;
while (performance.now() < drainUntil && !serverGone) {
  const missing = members.some((m) => rooms.some((r) => {
    const seen = new Set(m.rooms.get(r) ?? []);
    return [...sent.get(r)].some((id) => !seen.has(id));
  }));
  const tdMissing = users.some((u) => [...toDeviceSent.get(u.userId)].some((id) => !u.toDevice.has(id)));
  if (!missing && !tdMissing) break;
  await sleep(1000);
}
if (!serverGone) await sleep(6000); // one more long-poll round: anything duplicated late arrives too
stopSyncs = true;
await Promise.all(syncs);
clearInterval(sampler);
clearInterval(progress);
sampleRss();
await sampleHeap();
// Idle for a while, then once more after a forced full GC: what stays is what is held.
const runtimePid = serverGone ? undefined : procs.find((p) => p.role === "runtime")?.pid;
await sleep(20_000);
const idleRss = runtimePid && rssNow(runtimePid);
if (runtimePid) await inspector?.send("HeapProfiler.collectGarbage");
await sleep(2000);
const gcRss = runtimePid && rssNow(runtimePid);
const gcHeap = runtimePid ? (await inspector?.send("Runtime.getHeapUsage"))?.usedSize / 2 ** 20 : undefined;
inspector?.close();

// -- checks ---------------------------------------------------------------------------------------
const failures = [];
/** The room's events in order (oldest first), from /messages paged backwards. */
async function allMessages(roomId, token) {
  const ids = [];
  let from;
  for (let page = 0; page < 2000; page++) {
    const q = `dir=b&limit=100${from ? `&from=${enc(from)}` : ""}`;
    const { status, body } = await req("messages", "GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?${q}`, token);
    if (status !== 200) throw new Error(`/messages ${roomId}: ${status}`);
    for (const e of body.chunk) ids.push(e.event_id);
    if (!body.end || body.chunk.length === 0) break;
    from = body.end;
  }
  return ids.reverse();
}
const dupes = (xs) => xs.filter((x, i) => xs.indexOf(x) !== i);
let checkedStreams = 0;
let checkedWindows = 0;
/** Events a churner got again at a rejoin: the room's recent history before the join, which it
 *  had seen in an earlier membership (the spec allows it: a newly joined room's timeline). */
let resentAtRejoin = 0;
let totalSent = 0;
if (serverGone) failures.push(`the server went away ${serverGone.atMin.toFixed(1)} min into the run (see its output above); nothing checked`);
for (const roomId of serverGone ? [] : rooms) {
  const timeline = await allMessages(roomId, members[0].token);
  const where = new Map(timeline.map((id, i) => [id, i]));
  if (dupes(timeline).length) failures.push(`${roomId}: /messages repeats ${dupes(timeline).length} events`);
  const mine = [...sent.get(roomId)];
  totalSent += mine.length;
  const absent = mine.filter((id) => !where.has(id));
  if (absent.length) failures.push(`${roomId}: ${absent.length} sent events missing from /messages`);
  for (const m of members) {
    const start = m.startAfter.get(roomId);
    const expected = timeline.slice(start ? where.get(start) + 1 : 0);
    const got = m.rooms.get(roomId) ?? [];
    checkedStreams++;
    if (got.join() !== expected.join()) {
      const lost = expected.filter((id) => !got.includes(id)).length;
      failures.push(`${m.userId} ${roomId}: /sync stream ≠ /messages (${got.length} vs ${expected.length}; lost ${lost}, repeated ${dupes(got).length})`);
    }
  }
  for (const c of churners) {
    const got = c.rooms.get(roomId) ?? [];
    // Windows: from each of its join events to the next of its leave events.
    const joins = [];
    const leaves = [];
    resentAtRejoin += dupes(got).length;
    for (const id of new Set(got)) {
      const ev = c.memberships.get(id);
      if (ev === "join") joins.push(id);
      if (ev === "leave") leaves.push(id);
    }
    for (const joinId of joins) {
      const leaveId = leaves.find((l) => where.get(l) > where.get(joinId));
      if (!leaveId) continue;
      const expected = timeline.slice(where.get(joinId) + 1, where.get(leaveId) + 1);
      const gj = got.indexOf(joinId);
      const gotSeg = got.slice(gj + 1, got.indexOf(leaveId, gj) + 1);
      checkedWindows++;
      if (gotSeg.join() !== expected.join()) failures.push(`${c.userId} ${roomId}: stream between its join and leave ≠ /messages (${gotSeg.length} vs ${expected.length})`);
    }
  }
}
let toDeviceTotal = 0;
for (const u of serverGone ? [] : users) {
  for (const id of toDeviceSent.get(u.userId)) {
    toDeviceTotal++;
    const n = u.toDevice.get(id) ?? 0;
    if (n !== 1) failures.push(`to-device ${id} to ${u.userId}: received ${n} times`);
  }
  if (u.limited) failures.push(`${u.userId}: ${u.limited} limited timelines outside a join`);
}
const serverErrors = [...stats.values()].reduce((a, s) => a + [...s.errors].filter(([k]) => typeof k !== "number" || k >= 500).reduce((b, [, n]) => b + n, 0), 0);
if (serverErrors) failures.push(`${serverErrors} 5xx or network errors`);
if (serverGone) console.error(`server output (tail):\n${server.output().split("\n").slice(-30).join("\n")}`);
const stillUp = (await fetch(`${server.baseUrl}/_matrix/key/v2/server`).catch(() => null))?.ok ?? false;
if (!stillUp) failures.push("the server no longer answers");
await server.stop();

// -- report ---------------------------------------------------------------------------------------
const lines = [];
const out = (s) => (lines.push(s), console.log(s));
out(`soak${DIRECT ? " (--direct)" : ""}${ONLY ? ` (--only ${ONLY})` : ""}: ${MINUTES} min of traffic (${trafficSecs.toFixed(0)} s), ${MEMBERS} members + ${CHURNERS} churners, ${ROOMS} rooms, load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} (median ${percentile(loads, 50).toFixed(1)}), ${new Date().toISOString().slice(0, 16)}Z`);
out("");
out("| Requests | n | p50 ms | p90 ms | p99 ms | max ms | errors |");
out("| --- | --- | --- | --- | --- | --- | --- |");
for (const [kind, s] of [...stats].sort((a, b) => b[1].n - a[1].n)) {
  const errs = [...s.errors].map(([k, n]) => `${n}× ${k}`).join(", ") || "0";
  out(`| ${kind} | ${s.n} | ${percentile(s.ms, 50).toFixed(0)} | ${percentile(s.ms, 90).toFixed(0)} | ${percentile(s.ms, 99).toFixed(0)} | ${Math.max(...s.ms).toFixed(0)} | ${errs} |`);
}
// Latency over time: does anything slow down as the run goes on?
const minuteP50 = (kind) => {
  const s = stats.get(kind);
  if (!s) return "";
  const byMin = [];
  s.ms.forEach((ms, i) => {
    const m = Math.floor((s.at[i] - started) / 60_000);
    if (m >= 0 && m < MINUTES) (byMin[m] ??= []).push(ms);
  });
  return byMin.map((xs) => (xs ? percentile(xs, 50).toFixed(0) : "–")).join(" ");
};
out("");
out(`p50 per minute (ms): send ${minuteP50("send")}; to-device ${minuteP50("to-device")}; media upload ${minuteP50("media upload")}`);
out("");
out(`Checked: ${totalSent} sent events in /messages of ${rooms.length} rooms; ${checkedStreams} member streams (room × member) equal to /messages; ${checkedWindows} churner join→leave windows (events given again as history at a rejoin: ${resentAtRejoin}); ${toDeviceTotal} to-device messages; ${media.length} media uploads.`);
/** Least-squares slope in MiB per minute. */
function slope(samples) {
  const n = samples.length;
  if (n < 2) return 0;
  const mx = samples.reduce((a, s) => a + s.t, 0) / n;
  const my = samples.reduce((a, s) => a + s.mib, 0) / n;
  const num = samples.reduce((a, s) => a + (s.t - mx) * (s.mib - my), 0);
  const den = samples.reduce((a, s) => a + (s.t - mx) ** 2, 0);
  return (num / den) * 60_000;
}
out("");
out("| workerd RSS (MiB) | samples | start | peak | end | slope, whole run | slope, second half |");
out("| --- | --- | --- | --- | --- | --- | --- |");
for (const [role, xs] of Object.entries(rssSamples)) {
  if (!xs.length) continue;
  const half = xs.slice(Math.floor(xs.length / 2));
  out(`| ${role} | ${xs.length} | ${xs[0].mib.toFixed(0)} | ${Math.max(...xs.map((s) => s.mib)).toFixed(0)} | ${xs.at(-1).mib.toFixed(0)} | ${slope(xs).toFixed(2)} MiB/min | ${slope(half).toFixed(2)} MiB/min |`);
}
if (heapSamples.length) {
  const h = heapSamples;
  out(`| Worker JS heap used (inspector) | ${h.length} | ${h[0].mib.toFixed(0)} | ${Math.max(...h.map((s) => s.mib)).toFixed(0)} | ${h.at(-1).mib.toFixed(0)} | ${slope(h).toFixed(2)} MiB/min | ${slope(h.slice(Math.floor(h.length / 2))).toFixed(2)} MiB/min |`);
}
out(`After the run: runtime RSS ${idleRss?.toFixed(0)} MiB after 20 s idle, ${gcRss?.toFixed(0)} MiB after a forced full GC (JS heap used then: ${gcHeap?.toFixed(0)} MiB).`);
out("");
out(failures.length ? `FAILED (${failures.length}):\n${failures.slice(0, 40).map((f) => `  - ${f}`).join("\n")}` : "OK: nothing lost, nothing duplicated, no 5xx.");
if (problems.length) out(`Request problems (${problems.length}, first 15):\n${problems.slice(0, 15).map((p) => `  - ${p}`).join("\n")}`);
process.exitCode = failures.length ? 1 : 0;
