// Simplified Sliding Sync (MSC4186) benchmarks (issue 15):
//  (a) first response (no pos) for a list window of 20 rooms, timeline_limit 1, for one user in
//      R rooms — measured at several R on the same account (the time should not grow with R
//      beyond the hub's one read of the room list);
//  (b) incremental request (pos, timeout 0) after one new message in one room;
//  (c) send → delivery to a long-polling sliding sync (another user).
//
//   node_modules/.bin/node --import tsx bench/sliding-sync.mjs [steps=100,1000] [runs=10]
// Starts one Lattice server (wrangler dev) on loopback. Run from a quiet copy of the tree
// (`wrangler dev` reloads on file changes): git archive HEAD | tar -x -C /tmp/ssb && ln -s $PWD/node_modules /tmp/ssb/
import { execSync } from "node:child_process";
import { percentile, registerBenchUser } from "./util.mjs";

const steps = (process.argv[2] ?? "100,1000").split(",").map(Number);
const RUNS = Number(process.argv[3] ?? 10);
const { startServer } = await import("../test/e2e/harness.ts");
const server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" });
const baseUrl = server.baseUrl;
const enc = encodeURIComponent;
const load = () => execSync("uptime").toString().trim().replace(/^.*load average:\s*/, "");
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const fmt = (xs) => `p50 ${percentile(xs, 50).toFixed(1)} ms, p99 ${percentile(xs, 99).toFixed(1)} ms (n=${xs.length})`;

/** Server-Timing phases of sliding sync responses, per label (see timed). */
const phases = new Map();
let phaseLabel;
async function req(method, url, token, body, attempt = 0) {
  const res = await fetch(url, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const st = res.headers.get("server-timing");
  if (st && phaseLabel) {
    const m = phases.get(phaseLabel) ?? new Map();
    for (const part of st.split(", ")) {
      const [k, d] = part.split(";dur=");
      m.set(k, [...(m.get(k) ?? []), Number(d)]);
    }
    phases.set(phaseLabel, m);
  }
  const text = await res.text();
  if ((res.status === 503 || !text.startsWith("{")) && attempt < 10) {
    await new Promise((r) => setTimeout(r, 1000));
    return req(method, url, token, body, attempt + 1);
  }
  const json = JSON.parse(text);
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text.slice(0, 300)}`);
  return json;
}
const api = (method, path, token, body) => req(method, `${baseUrl}/_matrix/client/v3${path}`, token, body);
const sss = (token, body, q = "") => req("POST", `${baseUrl}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync${q}`, token, body);
const LIST = { ranges: [[0, 19]], timeline_limit: 1, required_state: [["m.room.name", ""], ["m.room.avatar", ""], ["m.room.member", "$ME"], ["m.room.encryption", ""]] };

async function pool(n, total, fn) {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < total) await fn(i++);
  }));
}

try {
  const tag = Date.now().toString(36);
  const alice = await registerBenchUser(baseUrl, `ssbench${tag}a`);
  const bob = await registerBenchUser(baseUrl, `ssbench${tag}b`);
  const rooms = [];
  let txn = 0;
  for (const target of steps) {
    const t0 = Date.now();
    const start = rooms.length;
    await pool(8, target - start, async () => {
      const { room_id } = await api("POST", "/createRoom", alice.token, { preset: "private_chat", name: `r${rooms.length}` });
      await api("PUT", `/rooms/${enc(room_id)}/send/m.room.message/b${++txn}`, alice.token, { msgtype: "m.text", body: "hi" });
      rooms.push(room_id);
    });
    log(`${rooms.length} rooms (+${target - start} in ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    // (a) first response, a new connection each time; one warm-up.
    const first = [];
    phaseLabel = `${target} first`;
    for (let i = 0; i <= RUNS; i++) {
      const t = performance.now();
      const r = await sss(alice.token, { conn_id: `a${i}`, lists: { all: LIST } });
      const ms = performance.now() - t;
      if (r.lists.all.count !== rooms.length || Object.keys(r.rooms).length !== 20) throw new Error(`unexpected first response: count ${r.lists.all.count}, ${Object.keys(r.rooms).length} rooms`);
      if (i > 0) first.push(ms);
    }
    // (b) incremental after one new message in one room (outside the window: it moves in).
    const inc = [];
    phaseLabel = `${target} incremental (outside)`;
    let pos = (await sss(alice.token, { conn_id: "inc", lists: { all: LIST } })).pos;
    let lastRoom;
    for (let i = 0; i <= RUNS; i++) {
      const roomId = rooms[Math.floor(Math.random() * rooms.length)];
      lastRoom = roomId;
      await api("PUT", `/rooms/${enc(roomId)}/send/m.room.message/i${++txn}`, alice.token, { msgtype: "m.text", body: `inc ${i}` });
      const t = performance.now();
      const r = await sss(alice.token, { conn_id: "inc", lists: { all: LIST } }, `?pos=${enc(pos)}&timeout=0`);
      const ms = performance.now() - t;
      if (!r.rooms[roomId]) throw new Error("incremental response without the room");
      pos = r.pos;
      if (i > 0) inc.push(ms);
    }
    // (b') the same, the message in a room already in the window (a pure delta).
    const hot = [];
    phaseLabel = `${target} incremental (inside)`;
    // The room of the last (b) message is at the top of the window now.
    const roomId = lastRoom;
    for (let i = 0; i <= RUNS; i++) {
      await api("PUT", `/rooms/${enc(roomId)}/send/m.room.message/h${++txn}`, alice.token, { msgtype: "m.text", body: `hot ${i}` });
      const t = performance.now();
      const r = await sss(alice.token, { conn_id: "inc", lists: { all: LIST } }, `?pos=${enc(pos)}&timeout=0`);
      const ms = performance.now() - t;
      if (!r.rooms[roomId] || r.rooms[roomId].initial) throw new Error("expected a delta of the room");
      pos = r.pos;
      if (i > 0) hot.push(ms);
    }
    console.log(
      `${rooms.length} rooms | (a) first response, window 20, timeline_limit 1: ${fmt(first)} | (b) incremental, one new message in a room outside the window: ${fmt(inc)} | (b') in a room inside it: ${fmt(hot)} | load ${load()}`,
    );
  }

  phaseLabel = undefined;
  for (const [label, m] of phases) console.log(`  server phases, ${label}: ${[...m].map(([k, xs]) => `${k} p50 ${percentile(xs, 50).toFixed(1)} ms`).join(", ")}`);
  // (c) send → delivery to bob's long-polling sliding sync.
  const { room_id: shared } = await api("POST", "/createRoom", alice.token, { preset: "public_chat" });
  await api("POST", `/rooms/${enc(shared)}/join`, bob.token, {});
  let pos = (await sss(bob.token, { lists: { all: LIST } })).pos;
  const fromReturn = [];
  const fromStart = [];
  for (let i = 0; i < RUNS * 5 + 5; i++) {
    const poll = (async () => {
      let r = await sss(bob.token, { lists: { all: LIST } }, `?pos=${enc(pos)}&timeout=30000`);
      return { at: performance.now(), r };
    })();
    await new Promise((r) => setTimeout(r, 5));
    const t0 = performance.now();
    const sent = await api("PUT", `/rooms/${enc(shared)}/send/m.room.message/d${++txn}`, alice.token, { msgtype: "m.text", body: `d${i}` });
    const t1 = performance.now();
    let { at, r } = await poll;
    while (!r.rooms?.[shared]?.timeline?.some((e) => e.event_id === sent.event_id)) {
      pos = r.pos;
      r = await sss(bob.token, { lists: { all: LIST } }, `?pos=${enc(pos)}&timeout=30000`);
      at = performance.now();
    }
    pos = r.pos;
    if (i >= 5) {
      fromStart.push(at - t0);
      fromReturn.push(Math.max(0, at - t1));
    }
  }
  console.log(`(c) send → delivery to a long-polling sliding sync: from PUT send returning ${fmt(fromReturn)}; from PUT send starting ${fmt(fromStart)} | load ${load()}`);
} finally {
  await server.stop();
}
