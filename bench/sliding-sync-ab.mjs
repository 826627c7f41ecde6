// Simplified Sliding Sync A/B: the measurements of bench/sliding-sync.mjs ((a) first response,
// (b) incremental with the new message outside the window, (b') inside it) against two trees at
// once — e.g. before and after a change — alternating request by request, so both see the same
// machine load (this machine is shared; sequential runs minutes apart are not comparable).
//
//   node_modules/.bin/node --import tsx bench/sliding-sync-ab.mjs TREE_A TREE_B [steps=100,1000] [runs=10]
// Each TREE is a quiet copy of a commit (git archive <rev> | tar -x -C DIR; ln -s $PWD/node_modules DIR/).
import path from "node:path";
import { execSync } from "node:child_process";
import { percentile, registerBenchUser } from "./util.mjs";

const [treeA, treeB] = process.argv.slice(2, 4).map((p) => path.resolve(p));
const steps = (process.argv[4] ?? "100,1000").split(",").map(Number);
const RUNS = Number(process.argv[5] ?? 10);
const load = () => execSync("uptime").toString().trim().replace(/^.*load average:\s*/, "");
const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);
const fmt = (xs) => `p50 ${percentile(xs, 50).toFixed(1)} / p99 ${percentile(xs, 99).toFixed(1)} ms`;
const enc = encodeURIComponent;
const LIST = { ranges: [[0, 19]], timeline_limit: 1, required_state: [["m.room.name", ""], ["m.room.avatar", ""], ["m.room.member", "$ME"], ["m.room.encryption", ""]] };

async function req(method, url, token, body, attempt = 0) {
  let res;
  try {
    res = await fetch(url, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    // A reset connection under heavy load (seen filling 5,000 rooms at load 24): retry, bounded.
    if (attempt >= 10) throw e;
    await new Promise((r) => setTimeout(r, 1000));
    return req(method, url, token, body, attempt + 1);
  }
  const text = await res.text();
  if ((res.status === 503 || !text.startsWith("{")) && attempt < 10) {
    await new Promise((r) => setTimeout(r, 1000));
    return req(method, url, token, body, attempt + 1);
  }
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text.slice(0, 300)}`);
  return { json: JSON.parse(text), timing: res.headers.get("server-timing") ?? "" };
}

async function side(name, tree) {
  const { startServer } = await import(path.join(tree, "test/e2e/harness.ts"));
  const server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" });
  const base = server.baseUrl;
  const user = await registerBenchUser(base, `ssab${Date.now().toString(36)}${name}`);
  const s = { name, server, base, user, rooms: [], txn: 0, pos: undefined, last: undefined, t: { first: [], inc: [], hot: [], begin: [] } };
  s.api = async (method, p, body) => (await req(method, `${base}/_matrix/client/v3${p}`, user.token, body)).json;
  s.sss = async (body, q = "") => {
    const t = performance.now();
    const r = await req("POST", `${base}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync${q}`, user.token, body);
    const begin = /begin;dur=([\d.]+)/.exec(r.timing);
    return { ms: performance.now() - t, r: r.json, begin: begin ? Number(begin[1]) : NaN };
  };
  return s;
}

async function fill(s, target) {
  let i = s.rooms.length;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (i < target) {
      i++;
      const { room_id } = await s.api("POST", "/createRoom", { preset: "private_chat", name: `r${i}` });
      await s.api("PUT", `/rooms/${enc(room_id)}/send/m.room.message/b${++s.txn}`, { msgtype: "m.text", body: "hi" });
      s.rooms.push(room_id);
    }
  }));
}

const A = await side("a", treeA);
const B = await side("b", treeB);
try {
  for (const target of steps) {
    const t0 = Date.now();
    await Promise.all([fill(A, target), fill(B, target)]);
    log(`${target} rooms on both (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    for (const s of [A, B]) {
      s.t = { first: [], inc: [], hot: [], begin: [] };
      s.pos = (await s.sss({ conn_id: "inc", lists: { all: LIST } })).r.pos;
    }
    for (let i = 0; i <= RUNS; i++) {
      // Alternate which side goes first.
      for (const s of i % 2 ? [B, A] : [A, B]) {
        const f = await s.sss({ conn_id: `a${target}_${i}`, lists: { all: LIST } });
        if (f.r.lists.all.count !== s.rooms.length) throw new Error(`${s.name}: count ${f.r.lists.all.count} != ${s.rooms.length}`);
        const roomId = s.rooms[Math.floor(Math.random() * s.rooms.length)];
        await s.api("PUT", `/rooms/${enc(roomId)}/send/m.room.message/i${++s.txn}`, { msgtype: "m.text", body: `inc ${i}` });
        const inc = await s.sss({ conn_id: "inc", lists: { all: LIST } }, `?pos=${enc(s.pos)}&timeout=0`);
        if (!inc.r.rooms[roomId]) throw new Error(`${s.name}: incremental without the room`);
        s.pos = inc.r.pos;
        await s.api("PUT", `/rooms/${enc(roomId)}/send/m.room.message/h${++s.txn}`, { msgtype: "m.text", body: `hot ${i}` });
        const hot = await s.sss({ conn_id: "inc", lists: { all: LIST } }, `?pos=${enc(s.pos)}&timeout=0`);
        if (!hot.r.rooms[roomId] || hot.r.rooms[roomId].initial) throw new Error(`${s.name}: expected a delta`);
        s.pos = hot.r.pos;
        if (i > 0) {
          s.t.first.push(f.ms);
          s.t.inc.push(inc.ms);
          s.t.hot.push(hot.ms);
          s.t.begin.push(f.begin, inc.begin, hot.begin);
        }
      }
    }
    for (const s of [A, B]) {
      console.log(`${s.name} ${target} rooms | (a) first ${fmt(s.t.first)} | (b) incremental, room enters window ${fmt(s.t.inc)} | (b') room in window ${fmt(s.t.hot)} | server 'begin' phase p50 ${percentile(s.t.begin, 50).toFixed(1)} ms | load ${load()}`);
    }
  }
} finally {
  await A.server.stop();
  await B.server.stop();
}
