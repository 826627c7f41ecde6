// Event → application-service transaction latency and throughput with a busy bridge: ROOMS rooms,
// each with a ghost of the appservice joined, get EVENTS messages in total from 10 concurrent
// senders. A plain Node appservice on loopback records when each event arrives. Reported: p50/p99
// of (arrival at the appservice − start of the send request), the send latency alone for
// comparison, throughput, and that nothing was lost, duplicated or reordered within a room.
//
//   node bench/appservice.mjs [events] [rooms] [senders]   (starts its own server; 1000 100 10)
import { createServer } from "node:http";
import { createHmac, randomBytes } from "node:crypto";
import { percentile, registerBenchUser } from "./util.mjs";
import { freePort, startServer } from "../test/e2e/harness.ts";

const EVENTS = Number(process.argv[2] ?? 1000);
const ROOMS = Number(process.argv[3] ?? 100);
const SENDERS = Number(process.argv[4] ?? 10);
const SECRET = "bench-shared-secret-0123456789";

const arrivals = new Map(); // event_id → ms (performance.now)
const perRoomOrder = new Map(); // room_id → [event_id in arrival order]
let duplicates = 0;
let transactions = 0;
const asPort = await freePort();
const hsToken = randomBytes(16).toString("hex");
const asServer = createServer((req, res) => {
  let data = "";
  req.on("data", (d) => (data += d));
  req.on("end", () => {
    if (req.url?.startsWith("/_matrix/app/v1/transactions/")) {
      transactions++;
      const now = performance.now();
      for (const e of JSON.parse(data).events ?? []) {
        if (e.type !== "m.room.message") continue;
        if (arrivals.has(e.event_id)) duplicates++;
        else arrivals.set(e.event_id, now);
        if (!perRoomOrder.has(e.room_id)) perRoomOrder.set(e.room_id, []);
        perRoomOrder.get(e.room_id).push(e.event_id);
      }
    }
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
});
await new Promise((r) => asServer.listen(asPort, "127.0.0.1", r));

const server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open", APPSERVICE_HTTP_LOOPBACK: "true", REGISTRATION_SHARED_SECRET: SECRET });
const base = server.baseUrl;
async function api(method, path, token, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

try {
  const tag = Date.now().toString(36);
  // Admin (shared secret) → registration through the admin API.
  const { nonce } = await (await fetch(`${base}/_synapse/admin/v1/register`)).json();
  const mac = createHmac("sha1", SECRET).update(`${nonce}\0benchadmin\0pw\0admin`).digest("hex");
  const admin = await (await fetch(`${base}/_synapse/admin/v1/register`, { method: "POST", body: JSON.stringify({ nonce, username: "benchadmin", password: "pw", admin: true, mac }) })).json();
  const asToken = randomBytes(16).toString("hex");
  await api("POST", "/_lattice/admin/v1/appservices", admin.access_token, {
    id: `bench${tag}`,
    url: `http://127.0.0.1:${asPort}`,
    as_token: asToken,
    hs_token: hsToken,
    sender_localpart: `benchbot${tag}`,
    rate_limited: false,
    namespaces: { users: [{ exclusive: true, regex: "@_bench_.*" }] },
  });
  const users = [];
  for (let i = 0; i < SENDERS; i++) users.push(await registerBenchUser(base, `asbench${tag}u${i}`));
  const ghost = `@_bench_${tag}:${server.serverName}`;
  await api("POST", "/_matrix/client/v3/register", asToken, { type: "m.login.application_service", username: ghost.slice(1, ghost.indexOf(":")), inhibit_login: true });
  const rooms = [];
  for (let r = 0; r < ROOMS; r++) {
    const u = users[r % SENDERS];
    const { room_id } = await api("POST", "/_matrix/client/v3/createRoom", u.token, { preset: "public_chat" });
    await api("POST", `/_matrix/client/v3/join/${encodeURIComponent(room_id)}?user_id=${encodeURIComponent(ghost)}`, asToken, {});
    rooms.push({ roomId: room_id, user: u });
  }
  // Let the set-up events drain.
  await new Promise((r) => setTimeout(r, 2000));

  const sent = []; // { eventId, roomId, start, sendMs }
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    users.map(async (u, s) => {
      for (;;) {
        const i = next++;
        if (i >= EVENTS) return;
        // Sender s writes to its own rooms, round-robin, so per-room order is its send order.
        const own = rooms.filter((_, r) => r % SENDERS === s);
        const room = own[Math.floor(i / SENDERS) % own.length];
        const start = performance.now();
        const { event_id } = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(room.roomId)}/send/m.room.message/${tag}-${i}`, u.token, { msgtype: "m.text", body: `e${i}` });
        sent.push({ eventId: event_id, roomId: room.roomId, start, sendMs: performance.now() - start });
      }
    }),
  );
  const sendDone = performance.now();
  const deadline = Date.now() + 120_000;
  while (sent.some((e) => !arrivals.has(e.eventId)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const allIn = Math.max(...sent.map((e) => arrivals.get(e.eventId) ?? 0));
  const lost = sent.filter((e) => !arrivals.has(e.eventId)).length;
  const latencies = sent.filter((e) => arrivals.has(e.eventId)).map((e) => arrivals.get(e.eventId) - e.start);
  const sends = sent.map((e) => e.sendMs);
  // From the send's response to the appservice (negative: it arrived before the response).
  const afterResponse = sent.filter((e) => arrivals.has(e.eventId)).map((e) => arrivals.get(e.eventId) - (e.start + e.sendMs));
  // Per-room order: the order the sends completed in (one sender per room, sequential sends).
  let reordered = 0;
  for (const { roomId } of rooms) {
    const expected = sent.filter((e) => e.roomId === roomId).map((e) => e.eventId);
    const got = (perRoomOrder.get(roomId) ?? []).filter((id) => expected.includes(id));
    if (JSON.stringify(expected) !== JSON.stringify(got)) reordered++;
  }
  const f = (x) => x.toFixed(1);
  console.log(`events: ${EVENTS} into ${ROOMS} rooms from ${SENDERS} concurrent senders`);
  console.log(`send → appservice: p50 ${f(percentile(latencies, 50))} ms, p99 ${f(percentile(latencies, 99))} ms (send alone: p50 ${f(percentile(sends, 50))} ms, p99 ${f(percentile(sends, 99))} ms)`);
  console.log(`send response → appservice: p50 ${f(percentile(afterResponse, 50))} ms, p99 ${f(percentile(afterResponse, 99))} ms`);
  console.log(`throughput: sends ${f(EVENTS / ((sendDone - t0) / 1000))}/s; all delivered ${f((allIn - t0) / 1000)} s after the first send; ${transactions} transactions`);
  console.log(`lost ${lost}, duplicated ${duplicates}, rooms out of order ${reordered}`);
  if (lost || duplicates || reordered) process.exitCode = 1;
} finally {
  asServer.close();
  await server.stop();
}
