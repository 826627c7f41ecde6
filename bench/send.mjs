// Single-room send latency (p50/p99) and throughput with 1 and 10 concurrent senders.
// Every send goes Worker → RoomDO: build, hash, sign, verify, auth against auth_events and
// state, persist, one linear chain.
//
// Run against a running server:  node bench/send.mjs http://127.0.0.1:8008 [sends-per-run]
//   (started with `npm start -- --port 8008 --var RATE_LIMITS:off --var REGISTRATION:open`)
// or let it start one:            node bench/send.mjs [sends-per-run]
import { percentile, registerBenchUser } from "./util.mjs";

const args = process.argv.slice(2);
let baseUrl = args[0]?.startsWith("http") ? args.shift() : undefined;
const total = Number(args[0] ?? 200);
let server;
if (!baseUrl) {
  const { startServer } = await import("../test/e2e/harness.ts");
  server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" });
  baseUrl = server.baseUrl;
}

async function api(method, path, token, body) {
  const res = await fetch(`${baseUrl}/_matrix/client/v3${path}`, {
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
  const users = [];
  for (let i = 0; i < 10; i++) users.push(await registerBenchUser(baseUrl, `sendbench${tag}u${i}`));
  const { room_id: roomId } = await api("POST", "/createRoom", users[0].token, { preset: "public_chat" });
  for (const u of users.slice(1)) await api("POST", `/rooms/${encodeURIComponent(roomId)}/join`, u.token, {});

  let txn = 0;
  const sendOne = async (u) => {
    const t = performance.now();
    await api("PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/b${tag}-${txn++}`, u.token, { msgtype: "m.text", body: "benchmark" });
    return performance.now() - t;
  };
  // Warm-up (isolate, DO, caches).
  for (let i = 0; i < 20; i++) await sendOne(users[0]);

  for (const senders of [1, 10]) {
    const latencies = [];
    const perSender = Math.ceil(total / senders);
    const start = performance.now();
    await Promise.all(
      users.slice(0, senders).map(async (u) => {
        for (let i = 0; i < perSender; i++) latencies.push(await sendOne(u));
      }),
    );
    const secs = (performance.now() - start) / 1000;
    console.log(
      `send, ${String(senders).padStart(2)} concurrent sender(s): p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms, ` +
        `${(latencies.length / secs).toFixed(0)} events/s (${latencies.length} sends)`,
    );
  }
} finally {
  await server?.stop();
}
