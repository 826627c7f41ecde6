// Sync benchmarks (issue 4 "Performance"):
//  (a) send-to-delivery: another user's long-polling /sync returns the event — p50/p99 over N
//      messages, measured from the start of `PUT send` and from its return (the hub is told before
//      the send returns, so delivery can precede the send's response: then it counts as 0);
//  (b) initial /sync of one user joined to R rooms of M members each, lazy-loading filter,
//      timeline limit 1 and 20;
//  (c) incremental /sync with nothing new (timeout 0).
//
// Run against a running server:  node bench/sync.mjs http://127.0.0.1:8008 [messages] [rooms] [members]
//   (started with `npm start -- --port 8008 --var RATE_LIMITS:off --var REGISTRATION:open`)
// or let it start one:            node bench/sync.mjs [messages] [rooms] [members]
import { percentile, registerBenchUser } from "./util.mjs";

const args = process.argv.slice(2);
let baseUrl = args[0]?.startsWith("http") ? args.shift() : undefined;
const messages = Number(args[0] ?? 200);
const roomCount = Number(args[1] ?? 300);
const memberCount = Number(args[2] ?? 20);
let server;
if (!baseUrl) {
  const { startServer } = await import("../test/e2e/harness.ts");
  server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" });
  baseUrl = server.baseUrl;
}

async function api(method, path, token, body, attempt = 0) {
  const res = await fetch(`${baseUrl}/_matrix/client/v3${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  // `wrangler dev` reloads when watched files change (a shared working tree): retry briefly.
  if ((res.status === 503 || !text.startsWith("{")) && attempt < 10) {
    await new Promise((r) => setTimeout(r, 1000));
    return api(method, path, token, body, attempt + 1);
  }
  const json = JSON.parse(text);
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}
const enc = encodeURIComponent;
const fmt = (xs) => `p50 ${percentile(xs, 50).toFixed(1)} ms, p99 ${percentile(xs, 99).toFixed(1)} ms`;

/** Run `fn` over `items` with at most `n` in flight. */
async function pool(items, n, fn) {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]);
    }),
  );
}

try {
  const tag = Date.now().toString(36);
  const [alice, bob] = [await registerBenchUser(baseUrl, `syncbench${tag}a`), await registerBenchUser(baseUrl, `syncbench${tag}b`)];
  const { room_id: roomId } = await api("POST", "/createRoom", alice.token, { preset: "public_chat" });
  await api("POST", `/rooms/${enc(roomId)}/join`, bob.token, {});

  // (a) send → delivery.
  let since = (await api("GET", "/sync?timeout=0&set_presence=offline", bob.token)).next_batch;
  const fromStart = [];
  const fromReturn = [];
  for (let i = 0; i < messages + 10; i++) {
    const poll = (async () => {
      const r = await api("GET", `/sync?since=${enc(since)}&timeout=30000&set_presence=offline`, bob.token);
      return { at: performance.now(), r };
    })();
    await new Promise((r) => setTimeout(r, 3)); // let the long-poll park in the hub
    const t0 = performance.now();
    const sent = await api("PUT", `/rooms/${enc(roomId)}/send/m.room.message/s${tag}-${i}`, alice.token, { msgtype: "m.text", body: `m${i}` });
    const t1 = performance.now();
    let { at, r } = await poll;
    // The long-poll might have returned something else first (presence, receipts): poll again.
    while (!r.rooms?.join?.[roomId]?.timeline.events.some((e) => e.event_id === sent.event_id)) {
      since = r.next_batch;
      r = await api("GET", `/sync?since=${enc(since)}&timeout=30000&set_presence=offline`, bob.token);
      at = performance.now();
    }
    since = r.next_batch;
    if (i >= 10) {
      fromStart.push(at - t0);
      fromReturn.push(Math.max(0, at - t1));
    }
  }
  console.log(`(a) send→delivery over ${messages} messages: from PUT start ${fmt(fromStart)}; from PUT return ${fmt(fromReturn)}`);

  // (c) incremental sync, nothing new.
  const idle = [];
  for (let i = 0; i < 100; i++) {
    const t = performance.now();
    await api("GET", `/sync?since=${enc(since)}&timeout=0&set_presence=offline`, bob.token);
    idle.push(performance.now() - t);
  }
  console.log(`(c) incremental sync, nothing new (100 requests): ${fmt(idle)}`);

  // (b) initial sync of a user in many rooms with many members.
  if (roomCount > 0) {
    const t0 = performance.now();
    const members = [];
    await pool(Array.from({ length: memberCount - 1 }, (_, i) => i), 4, async (i) => members.push(await registerBenchUser(baseUrl, `syncbench${tag}m${i}`)));
    const me = alice;
    const roomIds = [];
    await pool(Array.from({ length: roomCount }, (_, i) => i), 8, async (i) => {
      const { room_id } = await api("POST", "/createRoom", me.token, { preset: "public_chat", name: `bench ${i}` });
      for (const m of members) await api("POST", `/rooms/${enc(room_id)}/join`, m.token, {});
      await api("PUT", `/rooms/${enc(room_id)}/send/m.room.message/x${i}`, members[0]?.token ?? me.token, { msgtype: "m.text", body: "latest" });
      roomIds.push(room_id);
    });
    console.log(`    (setup: ${roomCount} rooms × ${memberCount} members in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    for (const limit of [1, 20]) {
      const filter = JSON.stringify({ room: { timeline: { limit }, state: { lazy_load_members: true } } });
      const times = [];
      let joined = 0;
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        const r = await api("GET", `/sync?filter=${enc(filter)}&set_presence=offline`, me.token);
        times.push(performance.now() - t);
        joined = Object.keys(r.rooms.join).length;
      }
      console.log(`(b) initial sync, ${joined} rooms × ${memberCount} members, lazy-loading, limit ${limit}: best ${Math.min(...times).toFixed(0)} ms, runs ${times.map((x) => x.toFixed(0)).join(" / ")} ms`);
    }
  }
} finally {
  await server?.stop();
}
